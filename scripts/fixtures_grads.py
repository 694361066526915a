#!/usr/bin/env python3
"""Gradient-parity fixtures for `tessera grads` and tests/train_grads.rs (torch + timm).

CI does not run this; the outputs are committed. Run from the repository root AFTER the model
fixtures exist (it reuses their weights, so re-run it whenever scripts/fixtures_{vit,mobilenet,
resnet}.py rewrite them):

    python3 scripts/fixtures_grads.py
    python3 scripts/fixtures_grads.py --f64   # writes nothing: float32 vs float64 torch errors

For one small variant of each family it loads the committed weights of the eval-parity
fixtures (tests/fixtures/models/, random weights with randomised batch-norm statistics; the
MobileNet files are float16 and are widened to float32 exactly as tessera's reader does), builds
the timm model with drop_rate = drop_path_rate = 0, puts it in training mode (batch statistics
in batch norm, which normalises with the biased batch variance), runs one forward on a fixed
input, the mean cross-entropy against fixed int64 labels, and one backward, all in float32.

Writes, under tests/fixtures/grads/:
- `<case>.input.npy`    float32 [N, C, H, W]
- `<case>.labels.npy`   int64 [N]
- `<case>.grads.safetensors`  F32, the layout `tessera grads` writes: `loss` (shape []),
  `logits` [N, 10], and the gradient of every parameter under its timm name
  (`model.named_parameters()`; a parameter with no gradient would be written as zeros, none of
  these models has one). The metadata records the weights file, the timm constructor and the
  tessera architecture with its overrides.

Cases (weights file in tests/fixtures/models/):
- vit:         vit_small_variant.safetensors, timm vit_tiny_patch16_224 with img_size=32,
               patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=10; input [4,3,32,32]
- mobilenetv2: mobilenetv2_035.safetensors (F16), timm mobilenetv2_035, num_classes=10;
               input [4,3,40,48]
- mobilenetv3: mobilenetv3_small_050.safetensors (F16), timm mobilenetv3_small_050,
               num_classes=10 (SE, hard-swish, hard-sigmoid gates); input [4,3,56,40]
- seresnet:    seresnet_small.safetensors, timm ResNet(Bottleneck, [1, 2, 1, 1],
               channels=(4, 8, 16, 32), in_chans=2, num_classes=10,
               block_args=dict(attn_layer='se')); input [3,2,33,47]
"""

import argparse
import os

import numpy as np
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from timm.models.resnet import Bottleneck, ResNet

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MODELS = os.path.join(ROOT, "tests", "fixtures", "models")
OUT = os.path.join(ROOT, "tests", "fixtures", "grads")

CASES = [
    dict(
        name="vit",
        weights="vit_small_variant.safetensors",
        build=lambda: timm.create_model(
            "vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=48, depth=2,
            num_heads=3, num_classes=10, drop_rate=0.0, drop_path_rate=0.0),
        timm="vit_tiny_patch16_224(img_size=32, patch_size=8, embed_dim=48, depth=2, "
             "num_heads=3, num_classes=10)",
        tessera="vit_tiny_patch16_224 --img-size 32 --patch-size 8 --embed-dim 48 --depth 2 "
                "--num-heads 3 --num-classes 10",
        input=(4, 3, 32, 32),
    ),
    dict(
        name="mobilenetv2",
        weights="mobilenetv2_035.safetensors",
        build=lambda: timm.create_model(
            "mobilenetv2_035", num_classes=10, drop_rate=0.0, drop_path_rate=0.0),
        timm="mobilenetv2_035(num_classes=10)",
        tessera="mobilenetv2_035 --num-classes 10",
        input=(4, 3, 40, 48),
    ),
    dict(
        name="mobilenetv3",
        weights="mobilenetv3_small_050.safetensors",
        build=lambda: timm.create_model(
            "mobilenetv3_small_050", num_classes=10, drop_rate=0.0, drop_path_rate=0.0),
        timm="mobilenetv3_small_050(num_classes=10)",
        tessera="mobilenetv3_small_050 --num-classes 10",
        input=(4, 3, 56, 40),
    ),
    dict(
        name="seresnet",
        weights="seresnet_small.safetensors",
        build=lambda: ResNet(
            Bottleneck, [1, 2, 1, 1], channels=(4, 8, 16, 32), in_chans=2, num_classes=10,
            block_args=dict(attn_layer="se"), drop_rate=0.0, drop_path_rate=0.0),
        timm="ResNet(Bottleneck, [1, 2, 1, 1], channels=(4, 8, 16, 32), in_chans=2, "
             "num_classes=10, block_args=dict(attn_layer='se'))",
        tessera="resnet::build_config (layers [1, 2, 1, 1], channels [4, 8, 16, 32], se, "
                "in_chans 2, num_classes 10); not reachable from the zoo",
        input=(3, 2, 33, 47),
    ),
]


def load_weights(model, path):
    sd = {k: v.float() for k, v in load_file(path).items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    assert not missing and not unexpected, (path, missing, unexpected)


def write_case(case, gen):
    model = case["build"]()
    load_weights(model, os.path.join(MODELS, case["weights"]))
    model.train()
    for m in model.modules():
        assert not isinstance(m, torch.nn.Dropout) or m.p == 0.0, m
    x = torch.randn(case["input"], generator=gen)
    labels = torch.randint(0, 10, (case["input"][0],), generator=gen, dtype=torch.int64)
    model.zero_grad(set_to_none=True)
    logits = model(x)
    loss = F.cross_entropy(logits, labels)  # mean over the batch
    loss.backward()
    out = {"loss": loss.detach().reshape([]).contiguous(), "logits": logits.detach().contiguous()}
    for name, p in model.named_parameters():
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        out[name] = g.detach().float().contiguous()
    meta = {"weights": "tests/fixtures/models/" + case["weights"], "timm": case["timm"],
            "tessera": case["tessera"]}
    save_file(out, os.path.join(OUT, f"{case['name']}.grads.safetensors"), metadata=meta)
    np.save(os.path.join(OUT, f"{case['name']}.input.npy"), x.numpy().astype(np.float32))
    np.save(os.path.join(OUT, f"{case['name']}.labels.npy"), labels.numpy().astype(np.int64))
    gmax = max(v.abs().max().item() for k, v in out.items() if k not in ("loss", "logits"))
    print(f"{case['name']}: loss {loss.item():.6f}, {len(out) - 2} gradients, "
          f"max |grad| {gmax:.3e}, max |logit| {logits.abs().max().item():.3f}")


ZERO_SHIFTS = lambda n: n.endswith(".bn3.bias") or n == "blocks.0.0.bn2.bias"


def f64_check(case):
    """The float32 noise floor: the committed float32 reference against the same computation in
    float64 (max |diff| / max |f64| per tensor; the exactly-zero batch-norm shift gradients of
    the MobileNets are left out, their ratio is meaningless)."""
    name = case["name"]
    x = torch.from_numpy(np.load(os.path.join(OUT, f"{name}.input.npy"))).double()
    labels = torch.from_numpy(np.load(os.path.join(OUT, f"{name}.labels.npy")))
    ref = load_file(os.path.join(OUT, f"{name}.grads.safetensors"))
    model = case["build"]()
    load_weights(model, os.path.join(MODELS, case["weights"]))
    model = model.double().train()
    logits = model(x)
    F.cross_entropy(logits, labels).backward()

    def rel(a, b):
        return ((a.double() - b).abs().max() / b.abs().max()).item()

    worst = max((rel(ref[n], p.grad), n) for n, p in model.named_parameters()
                if not ZERO_SHIFTS(n) or name not in ("mobilenetv2", "mobilenetv3"))
    print(f"{name}: torch float32 vs float64: logits {rel(ref['logits'], logits.detach()):.2e}, "
          f"worst gradient {worst[0]:.2e} ({worst[1]})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--f64", action="store_true",
                    help="write nothing; compare the committed references with float64 torch")
    args = ap.parse_args()
    if args.f64:
        for case in CASES:
            f64_check(case)
        return
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(20261128)
    for case in CASES:
        write_case(case, gen)


if __name__ == "__main__":
    main()
