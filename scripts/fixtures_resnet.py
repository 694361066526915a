#!/usr/bin/env python3
"""Writes the PyTorch/timm reference fixtures for tests/models_resnet.rs (ResNet, SE-ResNet).

Run from the repository root (needs torch, timm 1.0.31, safetensors; CI does not run it, the
output is committed):

    python3 scripts/fixtures_resnet.py

Writes, under tests/fixtures/models/:
- `<case>.safetensors`: the eval-mode state dict of a SMALL variant timm can build, with random
  weights and randomised batch-norm statistics (so eval-mode BN is not the identity);
- `<case>.input.npy`, `<case>.logits.npy`: a fixed input and the eval-mode logits;
- `<arch>.keys.txt` for resnet50, resnet101, seresnet50, seresnet101: every state_dict key of
  the full-size timm model with its shape and its parameter count (`# params N`).

Cases:
- resnet_small: ResNet(Bottleneck, [2, 1, 1, 1], channels=(4, 8, 16, 32), num_classes=10),
  input [2, 3, 40, 36].
- seresnet_small: ResNet(Bottleneck, [1, 2, 1, 1], channels=(4, 8, 16, 32), num_classes=10,
  in_chans=2, block_args=dict(attn_layer='se')), input [1, 2, 33, 47].
- seresnet_digits: tessera's `seresnet_digits` preset: ResNet(Bottleneck, [1, 1, 1, 1],
  channels=(16, 32, 64, 128), in_chans=1, num_classes=10, block_args=dict(attn_layer='se'))
  with conv1 replaced by a 3x3 stride-1 conv and no max-pool, input [2, 1, 8, 8].

With `--full DIR`, also writes the full-size models (random timm initialisation, BN statistics
randomised) to DIR/<arch>.safetensors with DIR/<arch>.input.npy ([1, 3, 224, 224]) and
DIR/<arch>.logits.npy, for the ignored test `full_size_checkpoints_match_timm` (run with
`TESSERA_RESNET_FULL=DIR cargo test --release --test models_resnet -- --ignored`). These are
~100-200 MB each: do not commit them.
"""

import os
import sys

import numpy as np
import timm
import torch
import torch.nn as nn
from safetensors.torch import save_file
from timm.models.resnet import Bottleneck, ResNet

torch.manual_seed(0)
OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "models")
FULL = ["resnet50", "resnet101", "seresnet50", "seresnet101"]


def randomise(model, bn3_scale=(0.5, 1.5)):
    """Random BN affine parameters and running statistics, random SE biases. `bn3_scale` is the
    range of the residual branches' last BN scale (kept small for the deep full-size models so
    the residual stream does not grow by orders of magnitude)."""
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.BatchNorm2d):
                lo, hi = bn3_scale if name.endswith("bn3") else (0.5, 1.5)
                m.weight.uniform_(lo, hi)
                m.bias.normal_(0.0, 0.2)
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
            elif isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.normal_(0.0, 0.2)
    return model.eval()


def clean_state_dict(model):
    return {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}


def write_case(name, model, x):
    model = randomise(model)
    with torch.no_grad():
        y = model(x)
    save_file(clean_state_dict(model), os.path.join(OUT, f"{name}.safetensors"))
    np.save(os.path.join(OUT, f"{name}.input.npy"), x.numpy().astype(np.float32))
    np.save(os.path.join(OUT, f"{name}.logits.npy"), y.numpy().astype(np.float32))
    n = sum(p.numel() for p in model.parameters())
    print(f"{name}: {n} params, logits {tuple(y.shape)}, max |logit| {y.abs().max():.3f}")


def digits(se, in_chans=1, num_classes=10):
    block_args = dict(attn_layer="se") if se else None
    m = ResNet(Bottleneck, [1, 1, 1, 1], channels=(16, 32, 64, 128), in_chans=in_chans,
               num_classes=num_classes, block_args=block_args)
    m.conv1 = nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False)
    nn.init.kaiming_normal_(m.conv1.weight, mode="fan_out", nonlinearity="relu")
    m.maxpool = nn.Identity()
    return m


def main():
    os.makedirs(OUT, exist_ok=True)
    write_case("resnet_small",
               ResNet(Bottleneck, [2, 1, 1, 1], channels=(4, 8, 16, 32), num_classes=10),
               torch.randn(2, 3, 40, 36))
    write_case("seresnet_small",
               ResNet(Bottleneck, [1, 2, 1, 1], channels=(4, 8, 16, 32), num_classes=10,
                      in_chans=2, block_args=dict(attn_layer="se")),
               torch.randn(1, 2, 33, 47))
    write_case("seresnet_digits", digits(True), torch.randn(2, 1, 8, 8))

    for arch in FULL:
        m = timm.create_model(arch)
        n = sum(p.numel() for p in m.parameters())
        with open(os.path.join(OUT, f"{arch}.keys.txt"), "w") as f:
            f.write(f"# timm {timm.__version__} {arch} state_dict: key shape\n# params {n}\n")
            for k, v in m.state_dict().items():
                f.write(f"{k} {','.join(str(d) for d in v.shape)}\n")
        print(f"{arch}: {n} params")

    if len(sys.argv) == 3 and sys.argv[1] == "--full":
        d = sys.argv[2]
        os.makedirs(d, exist_ok=True)
        for arch in FULL:
            m = randomise(timm.create_model(arch), bn3_scale=(0.05, 0.25))
            x = torch.randn(1, 3, 224, 224)
            with torch.no_grad():
                y = m(x)
            save_file(clean_state_dict(m), os.path.join(d, f"{arch}.safetensors"))
            np.save(os.path.join(d, f"{arch}.input.npy"), x.numpy())
            np.save(os.path.join(d, f"{arch}.logits.npy"), y.numpy())
            print(f"full {arch}: max |logit| {y.abs().max():.3f}")


if __name__ == "__main__":
    main()
