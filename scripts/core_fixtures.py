#!/usr/bin/env python3
"""Writes the PyTorch reference fixtures for tessera-core's parity tests.

Run from the repository root (needs torch; CI does not run it, the output is committed):

    python3 scripts/core_fixtures.py

Writes tests/fixtures/core/core.tsfx. Every case stores its inputs (`<case>/in<i>`), the output
(`<case>/out`), a random upstream gradient (`<case>/gout`) and the gradient of every input
(`<case>/grad<i>`), plus any extra non-differentiable arguments (`<case>/<name>`, e.g. class
targets as floats). tests/core_parity.rs recomputes each case with tessera and compares.

File format (little endian): magic b"TSFX0001", u32 tensor count, then per tensor:
u32 name length, name (UTF-8), u32 rank, rank x u64 dims, f32 data (row-major).
"""

import math
import os
import struct

import torch
import torch.nn.functional as F

torch.manual_seed(0)
torch.set_default_dtype(torch.float32)
OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "core", "core.tsfx")

tensors = {}


def away(x, kinks, gap=0.05):
    """Pushes values at least `gap` away from each kink (the Rust side does not perturb)."""
    for k in kinks:
        near = (x - k).abs() < gap
        x = torch.where(near, torch.where(x >= k, k + gap, k - gap), x)
    return x


def distinct(shape, step=0.05):
    n = math.prod(shape)
    return (torch.randperm(n).float() * step - n * step / 2).reshape(shape)


def case(name, fn, inputs, grads=None, **extra):
    xs = [x.detach().clone().requires_grad_(True) for x in inputs]
    out = fn(*xs)
    gout = torch.randn_like(out)
    out.backward(gout)
    for i, x in enumerate(inputs):
        tensors[f"{name}/in{i}"] = x
        tensors[f"{name}/grad{i}"] = xs[i].grad if xs[i].grad is not None else torch.zeros_like(x)
    tensors[f"{name}/out"] = out
    tensors[f"{name}/gout"] = gout
    for k, v in extra.items():
        tensors[f"{name}/{k}"] = torch.as_tensor(v, dtype=torch.float32)


r = torch.randn
pos = lambda *s: torch.rand(*s) * 1.5 + 0.5

# ---- element-wise (broadcasting) ----
case("add", torch.add, [r(2, 3, 4), r(3, 1)])
case("sub", torch.sub, [r(4), r(2, 3, 4)])
case("mul", torch.mul, [r(2, 1, 4), r(3, 1)])
case("div", torch.div, [r(2, 3), pos(2, 1)])
case("pow", torch.pow, [pos(2, 3), r(3)])
case("maximum", torch.maximum, [torch.randint(-20, 20, (2, 3)) * 0.1, torch.randint(-20, 20, (3,)) * 0.1 + 0.05])
case("minimum", torch.minimum, [torch.randint(-20, 20, (2, 3)) * 0.1, torch.randint(-20, 20, (2, 1)) * 0.1 + 0.05])
case("neg", torch.neg, [r(3, 4)])
case("add_scalar", lambda x: x + 1.5, [r(3, 4)])
case("mul_scalar", lambda x: x * -2.5, [r(3, 4)])
case("div_scalar", lambda x: x / 4.0, [r(3, 4)])
case("powf", lambda x: x ** 2.5, [pos(3, 4)])
case("exp", torch.exp, [r(3, 4)])
case("log", torch.log, [pos(3, 4)])
case("sqrt", torch.sqrt, [pos(3, 4)])
case("rsqrt", torch.rsqrt, [pos(3, 4)])
case("abs", torch.abs, [away(r(3, 4), [0.0])])
case("clamp", lambda x: x.clamp(-1.0, 0.5), [away(r(3, 4), [-1.0, 0.5])])
# ---- activations ----
case("relu", F.relu, [away(r(3, 5), [0.0])])
case("relu6", F.relu6, [away(r(3, 5) * 4 + 2, [0.0, 6.0])])
case("leaky_relu", lambda x: F.leaky_relu(x, 0.1), [away(r(3, 5), [0.0])])
case("sigmoid", torch.sigmoid, [r(3, 5) * 3])
case("tanh", torch.tanh, [r(3, 5) * 2])
case("silu", F.silu, [r(3, 5) * 3])
case("hardsigmoid", F.hardsigmoid, [away(r(3, 5) * 3, [-3.0, 3.0])])
case("hardswish", F.hardswish, [away(r(3, 5) * 3, [-3.0, 3.0])])
case("gelu", F.gelu, [r(3, 5) * 3])
case("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"), [r(3, 5) * 3])
# ---- reductions ----
case("sum", lambda x: x.sum(dim=(0, 2), keepdim=True), [r(3, 4, 5)])
case("sum_all", lambda x: x.sum(), [r(3, 4, 5)])
case("mean", lambda x: x.mean(dim=1), [r(3, 4, 5)])
case("max", lambda x: x.amax(dim=(1,), keepdim=False), [distinct((3, 4, 5))])
case("var", lambda x: x.var(dim=(0, 2), keepdim=True), [r(3, 4, 5)])
case("std", lambda x: x.std(dim=2, correction=0), [r(3, 4, 5)])
# ---- matmul ----
case("matmul_2d", torch.matmul, [r(5, 7), r(7, 3)])
case("matmul_tn", lambda a, b: a.t() @ b, [r(7, 5), r(7, 3)])
case("matmul_batched", torch.matmul, [r(2, 1, 4, 6), r(3, 6, 5)])
case("linear", F.linear, [r(2, 3, 6), r(4, 6), r(4)])
# ---- views / indexing ----
case("permute_reshape", lambda x: x.permute(2, 0, 1).reshape(4, 6) * 1.0, [r(2, 3, 4)])
case("narrow_expand", lambda x: x.narrow(1, 1, 2).unsqueeze(0).expand(3, 2, 2, 4) * 1.0, [r(2, 4, 4)])
case("cat", lambda a, b: torch.cat([a, b], dim=1), [r(2, 3), r(2, 2)])
case("stack", lambda a, b: torch.stack([a, b], dim=1), [r(2, 3), r(2, 3)])
gidx = torch.tensor([[1], [0], [2]])
case("gather", lambda x: x.gather(1, gidx), [r(3, 4)], index=gidx.float())
sidx = torch.tensor([2, 0, 2])
case("index_select", lambda x: x.index_select(0, sidx), [r(3, 4)], index=sidx.float())
# ---- fused ----
case("softmax", lambda x: F.softmax(x, dim=1), [r(2, 5, 3) * 2])
case("log_softmax", lambda x: F.log_softmax(x, dim=-1), [r(4, 6) * 2])
tgt = torch.tensor([1, 0, 4, 2])
case("cross_entropy", lambda x: F.cross_entropy(x, tgt), [r(4, 5) * 2], targets=tgt.float())
case("cross_entropy_ls", lambda x: F.cross_entropy(x, tgt, label_smoothing=0.1), [r(4, 5) * 2], targets=tgt.float())
case("layer_norm", lambda x, g, b: F.layer_norm(x, (6,), g, b, 1e-5), [r(2, 3, 6), r(6), r(6)])
rm, rv = r(3), pos(3)
rm_t, rv_t = rm.clone(), rv.clone()
case("batch_norm_train", lambda x, g, b: F.batch_norm(x, rm_t, rv_t, g, b, True, 0.1, 1e-5),
     [r(4, 3, 2, 3), r(3), r(3)], running_mean=rm, running_var=rv)
tensors["batch_norm_train/running_mean_out"] = rm_t
tensors["batch_norm_train/running_var_out"] = rv_t
case("batch_norm_eval", lambda x, g, b: F.batch_norm(x, rm, rv, g, b, False, 0.1, 1e-5),
     [r(2, 3, 2, 3), r(3), r(3)], running_mean=rm, running_var=rv)
case("conv2d", lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1, dilation=1, groups=1),
     [r(2, 3, 7, 6), r(4, 3, 3, 3), r(4)])
case("conv2d_groups_dilation", lambda x, w: F.conv2d(x, w, None, stride=1, padding=2, dilation=2, groups=2),
     [r(1, 4, 6, 6), r(6, 2, 3, 3)])
case("conv2d_depthwise", lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1, groups=4),
     [r(2, 4, 7, 7), r(4, 1, 3, 3), r(4)])
case("max_pool2d", lambda x: F.max_pool2d(x, 3, stride=2, padding=1), [distinct((2, 2, 7, 6))])
case("avg_pool2d", lambda x: F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False), [r(2, 2, 7, 6)])
case("adaptive_avg_pool2d", lambda x: F.adaptive_avg_pool2d(x, (3, 2)), [r(2, 2, 7, 5)])


# ---- composed: one pre-norm attention block ----
def attention(x, g, b, wqkv, bqkv, wo, bo):
    B, T, D = x.shape
    H = 2
    h = F.layer_norm(x, (D,), g, b, 1e-5)
    qkv = F.linear(h, wqkv, bqkv)
    q, k, v = qkv.narrow(2, 0, D), qkv.narrow(2, D, D), qkv.narrow(2, 2 * D, D)
    q, k, v = (t.reshape(B, T, H, D // H).permute(0, 2, 1, 3) for t in (q, k, v))
    att = F.softmax(q @ k.transpose(2, 3) / math.sqrt(D // H), dim=-1)
    o = (att @ v).permute(0, 2, 1, 3).reshape(B, T, D)
    return x + F.linear(o, wo, bo)


case("attention", attention, [r(2, 5, 8), 1 + 0.1 * r(8), 0.1 * r(8), 0.3 * r(24, 8), 0.1 * r(24), 0.3 * r(8, 8), 0.1 * r(8)])

# ---- a few more, appended so the cases above keep their data ----
case("sub_scalar", lambda x: x - 0.5, [r(3, 4)])
case("select_class_token", lambda x: x[:, 0] * 1.0, [r(2, 5, 8)])
case("squeeze_unsqueeze", lambda x: x.unsqueeze(1).squeeze(2) * 1.0, [r(3, 1, 4)])
case("global_avg_pool2d", lambda x: F.adaptive_avg_pool2d(x, 1), [r(2, 3, 5, 4)])
case("mse_loss", F.mse_loss, [r(3, 4), r(3, 4)])

with open(OUT, "wb") as f:
    f.write(b"TSFX0001")
    f.write(struct.pack("<I", len(tensors)))
    for name, t in tensors.items():
        t = t.detach().contiguous().float()
        nb = name.encode()
        f.write(struct.pack("<I", len(nb)))
        f.write(nb)
        f.write(struct.pack("<I", t.dim()))
        f.write(struct.pack(f"<{t.dim()}Q", *t.shape))
        f.write(struct.pack(f"<{t.numel()}f", *t.flatten().tolist()))
print(f"wrote {len(tensors)} tensors to {os.path.normpath(OUT)} ({os.path.getsize(OUT)} bytes)")
