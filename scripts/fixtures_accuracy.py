#!/usr/bin/env python3
"""Float64 truth for the numerical-accuracy tests (tests/models_accuracy.rs), torch + timm.

CI does not run this; the small outputs are committed. Run from the repository root:

    python3 scripts/fixtures_accuracy.py               # the small cases, tests/fixtures/accuracy/
    python3 scripts/fixtures_accuracy.py --full DIR    # also full-size SE-ResNet-101 into DIR

For each case it builds the timm model with random weights (timm's initialisation, then every
bias uniform in +-0.1 and batch-norm / layer-norm statistics randomised: scale 1 +- 0.1, shift
+- 0.1, running mean +- 0.1, running variance 0.75-1.25), rounds every tensor through float16
(so the stored weights are exactly what float32 and float64 both start from), and runs

- eval mode: the logits of a fixed input,
- training mode (batch statistics, no dropout): the logits, the mean cross-entropy against
  fixed int64 labels and the gradient of every parameter,

once in float64 (the truth) and once in float32 (to record PyTorch's own error against it).

Files per case (`<case>` = vit, mobilenetv2, mobilenetv3, seresnet):
- `<case>.weights.safetensors`  the state dict, F16 (F32 for the full-size case);
- `<case>.input.npy`  float32 [N, C, H, W] (used for both modes), `<case>.labels.npy` int64 [N];
- `<case>.truth.safetensors`, all F32:
  - `eval.logits`, `train.logits`, `loss`: the float64 truth split as `hi + lo` (`hi` =
    float32(truth), `lo` = float32(truth - hi) under the name with `.lo` appended), which keeps
    ~48 bits;
  - `grad.<timm name>`: the float64 gradient rounded to float32 (only `hi`: the tests add the
    largest rounding error, stored as `round.grad.<name>`, to their measured error, so the
    comparison stays conservative without doubling the file);
  - `torch.<key>` (shape []): PyTorch float32's max |f32 - f64| for every key above, the
    median over three float32 runs at 1, 2 and 4 threads (its reduction order, hence its
    error, changes with the thread count: on the ill-conditioned training-mode gradients of
    deep, small-spatial layers one run can be 20x luckier than another).
  The metadata names the timm constructor and the tessera architecture.

Cases:
- vit:         timm vit_tiny_patch16_224(img_size=32, patch_size=8, embed_dim=48, depth=4,
               num_heads=3, num_classes=10); input [4, 3, 32, 32]
- mobilenetv2: timm mobilenetv2_035(num_classes=10); input [4, 3, 40, 48]
- mobilenetv3: timm mobilenetv3_small_050(num_classes=10); input [4, 3, 56, 40]
- seresnet:    timm ResNet(Bottleneck, [2, 2, 2, 2], channels=(8, 16, 32, 64), num_classes=10,
               block_args=dict(attn_layer='se')); input [4, 3, 64, 48]
- seresnet101 (--full only): timm seresnet101, F32 weights; eval input [1, 3, 224, 224] stored
  as `eval_input.npy` (the training input [2, 3, 64, 64] is `input.npy`). Run its test with
  `TESSERA_ACCURACY_FULL=DIR cargo test --release --test models_accuracy -- --ignored`.
  About 350 MB: do not commit it.
"""

import argparse
import os
import zlib

import numpy as np
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from timm.models.resnet import Bottleneck, ResNet

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "accuracy")

CASES = [
    dict(
        name="vit",
        build=lambda: timm.create_model(
            "vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=48, depth=4,
            num_heads=3, num_classes=10, drop_rate=0.0, drop_path_rate=0.0),
        timm="vit_tiny_patch16_224(img_size=32, patch_size=8, embed_dim=48, depth=4, "
             "num_heads=3, num_classes=10)",
        tessera="vit_tiny_patch16_224 --img-size 32 --patch-size 8 --embed-dim 48 --depth 4 "
                "--num-heads 3 --num-classes 10",
        input=(4, 3, 32, 32),
    ),
    dict(
        name="mobilenetv2",
        build=lambda: timm.create_model(
            "mobilenetv2_035", num_classes=10, drop_rate=0.0, drop_path_rate=0.0),
        timm="mobilenetv2_035(num_classes=10)",
        tessera="mobilenetv2_035 --num-classes 10",
        input=(4, 3, 40, 48),
    ),
    dict(
        name="mobilenetv3",
        build=lambda: timm.create_model(
            "mobilenetv3_small_050", num_classes=10, drop_rate=0.0, drop_path_rate=0.0),
        timm="mobilenetv3_small_050(num_classes=10)",
        tessera="mobilenetv3_small_050 --num-classes 10",
        input=(4, 3, 56, 40),
    ),
    dict(
        name="seresnet",
        build=lambda: ResNet(
            Bottleneck, [2, 2, 2, 2], channels=(8, 16, 32, 64), num_classes=10,
            block_args=dict(attn_layer="se"), drop_rate=0.0, drop_path_rate=0.0),
        timm="ResNet(Bottleneck, [2, 2, 2, 2], channels=(8, 16, 32, 64), num_classes=10, "
             "block_args=dict(attn_layer='se'))",
        tessera="resnet::build_config (layers [2, 2, 2, 2], channels [8, 16, 32, 64], se, "
                "num_classes 10)",
        input=(4, 3, 64, 48),
    ),
]

THREADS = (1, 2, 4)

FULL = dict(
    name="seresnet101",
    build=lambda: timm.create_model("seresnet101", drop_rate=0.0, drop_path_rate=0.0),
    timm="seresnet101()",
    tessera="seresnet101",
    input=(2, 3, 64, 64),
    eval_input=(1, 3, 224, 224),
)


def randomise(model, gen, dtype):
    """Biases +- 0.1 and norm statistics as the module docstring says, then every tensor
    rounded through `dtype` (float16 for the committed cases)."""
    with torch.no_grad():
        norms = {n for n, m in model.named_modules()
                 if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm))}
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            owner = name.rsplit(".", 1)[0]
            u = lambda lo, hi: torch.rand(t.shape, generator=gen, dtype=torch.float64) * (hi - lo) + lo
            if name.endswith("running_var"):
                t.copy_(u(0.75, 1.25))
            elif name.endswith("running_mean"):
                t.copy_(u(-0.1, 0.1))
            elif owner in norms and name.endswith("weight"):
                t.copy_(u(0.9, 1.1))
            elif name.endswith("bias"):
                t.copy_(u(-0.1, 0.1))
            t.copy_(t.to(dtype).to(t.dtype))
    return model


def state_dict(model, dtype):
    return {k: v.detach().to(dtype).contiguous().clone() for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def run(case, sd, x, x_eval, labels, dtype):
    """Eval logits, training logits, loss and every gradient of the model in `dtype`."""
    model = case["build"]()
    model.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=False)
    model = model.to(dtype).eval()
    for m in model.modules():
        assert not isinstance(m, nn.Dropout) or m.p == 0.0, m
    out = {}
    with torch.no_grad():
        out["eval.logits"] = model(x_eval.to(dtype))
    model.train()
    logits = model(x.to(dtype))
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    out["train.logits"] = logits.detach()
    out["loss"] = loss.detach().reshape([])
    for name, p in model.named_parameters():
        out["grad." + name] = p.grad if p.grad is not None else torch.zeros_like(p)
    return out


def write(case, out_dir, gen, weights_dtype):
    name = case["name"]
    model = randomise(case["build"](), gen, weights_dtype)
    sd = state_dict(model, torch.float64)
    x = torch.randn(case["input"], generator=gen)
    x_eval = torch.randn(case["eval_input"], generator=gen) if "eval_input" in case else x
    labels = torch.randint(0, 10, (case["input"][0],), generator=gen, dtype=torch.int64)
    truth = run(case, sd, x, x_eval, labels, torch.float64)
    # PyTorch's float32 error depends on its reduction order, which depends on its thread
    # count; on ill-conditioned gradients (training-mode batch norm over a few values per
    # channel) one run can be 20x luckier than another. Its error is taken as the median over
    # runs at THREADS threads.
    runs = []
    for t in THREADS:
        torch.set_num_threads(t)
        runs.append(run(case, sd, x, x_eval, labels, torch.float32))
    torch.set_num_threads(THREADS[-1])
    out = {}
    for key, t in truth.items():
        hi = t.float()
        out[key] = hi.contiguous()
        if key.startswith("grad."):
            out["round." + key] = (t - hi.double()).abs().max().float().reshape([])
        else:
            out[key + ".lo"] = (t - hi.double()).float().contiguous()
        errs = sorted((r[key].double() - t).abs().max().item() for r in runs)
        out["torch." + key] = torch.tensor(errs[len(errs) // 2], dtype=torch.float32)
    meta = {"timm": case["timm"], "tessera": case["tessera"]}
    save_file(out, os.path.join(out_dir, f"{name}.truth.safetensors"), metadata=meta)
    save_file(state_dict(model, weights_dtype), os.path.join(out_dir, f"{name}.weights.safetensors"))
    np.save(os.path.join(out_dir, f"{name}.input.npy"), x.numpy().astype(np.float32))
    if "eval_input" in case:
        np.save(os.path.join(out_dir, f"{name}.eval_input.npy"), x_eval.numpy().astype(np.float32))
    np.save(os.path.join(out_dir, f"{name}.labels.npy"), labels.numpy().astype(np.int64))

    def rel(key):
        return out["torch." + key].item() / truth[key].abs().max().item()

    gmax = max(t.abs().max().item() for k, t in truth.items() if k.startswith("grad."))
    worst = max((out["torch." + k].item() / max(truth[k].abs().max().item(), 1e-6 * gmax), k)
                for k in truth if k.startswith("grad."))
    print(f"{name}: torch f32 vs f64: eval logits {rel('eval.logits'):.2e}, train logits "
          f"{rel('train.logits'):.2e}, loss {rel('loss'):.2e}, worst gradient {worst[0]:.2e} "
          f"({worst[1]}), {sum(k.startswith('grad.') for k in truth)} gradients")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", metavar="DIR", help="also write full-size SE-ResNet-101 to DIR")
    ap.add_argument("--only-full", action="store_true", help="skip the small cases")
    args = ap.parse_args()
    # The small cases draw in sequence from one seed (the committed fixtures); the full case
    # from a seed of its own name, so that its draw is the same with or without them.
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(20261203)
    if not args.only_full:
        os.makedirs(OUT, exist_ok=True)
        for case in CASES:
            write(case, OUT, gen, torch.float16)
    if args.full:
        os.makedirs(args.full, exist_ok=True)
        seed = zlib.crc32(FULL["name"].encode()) + 20261203
        torch.manual_seed(seed)
        write(FULL, args.full, torch.Generator().manual_seed(seed), torch.float32)


if __name__ == "__main__":
    main()
