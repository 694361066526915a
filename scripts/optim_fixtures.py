"""Reference trajectories of torch.optim.SGD (momentum, Nesterov, weight decay) and
torch.optim.AdamW on a Linear(3, 2) for tests/train_optim.rs, with timm-style parameter groups
(the bias gets no weight decay). Gradient clipping (clip_grad_norm_) is applied in the AdamW run.

Run from the repository root: python3 scripts/optim_fixtures.py (needs torch; CI does not).
"""
import torch

torch.manual_seed(0)
w0 = torch.randn(2, 3)
b0 = torch.randn(2)
grads = [(torch.randn(2, 3), torch.randn(2)) for _ in range(4)]
lines = [("w0", w0), ("b0", b0)]
for i, (gw, gb) in enumerate(grads):
    lines += [(f"gw{i}", gw), (f"gb{i}", gb)]


def run(make_opt, clip=None, tag=""):
    w = w0.clone().requires_grad_(True)
    b = b0.clone().requires_grad_(True)
    opt = make_opt([{"params": [w], "weight_decay": None}, {"params": [b], "weight_decay": 0.0}])
    for i, (gw, gb) in enumerate(grads):
        opt.zero_grad()
        (w * gw).sum().add((b * gb).sum()).backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_([w, b], clip)
        opt.step()
        lines.append((f"{tag}_w{i}", w.detach().clone()))
        lines.append((f"{tag}_b{i}", b.detach().clone()))


def sgd(groups):
    groups[0]["weight_decay"] = 0.05
    return torch.optim.SGD(groups, lr=0.1, momentum=0.9, nesterov=True)


def adamw(groups):
    groups[0]["weight_decay"] = 0.05
    return torch.optim.AdamW(groups, lr=0.01, betas=(0.9, 0.999), eps=1e-8)


run(sgd, tag="sgd")
run(adamw, clip=1.0, tag="adamw")
with open("tests/fixtures/optim/torch_optim.txt", "w") as f:
    for k, v in lines:
        f.write(k + " " + " ".join(repr(float(x)) for x in v.flatten().tolist()) + "\n")
print("wrote tests/fixtures/optim/torch_optim.txt")
