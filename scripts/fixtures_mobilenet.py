#!/usr/bin/env python3
"""Writes the MobileNetV2 / MobileNetV3 parity fixtures under tests/fixtures/models/ (torch + timm).

CI does not run this; the outputs are committed. Run from the repository root:

    python3 scripts/fixtures_mobilenet.py            # small committed fixtures (~2 MB)
    python3 scripts/fixtures_mobilenet.py --full DIR # full-size random-weight checks, NOT committed

Small fixtures (random weights, randomised batch-norm running statistics so eval-mode BN is not
the identity, every tensor rounded to float16 to halve the file size; the reference logits are
computed in float32 from those same rounded values, so the Rust side sees identical weights):

- mobilenetv2_035.safetensors: timm `mobilenetv2_035`, num_classes=10 (state dict, F16).
- mobilenetv3_small_050.safetensors: timm `mobilenetv3_small_050`, num_classes=10 (F16).
- mobilenet_io.safetensors (F32): inputs and eval-mode logits:
    v2_input [2,3,40,48] / v2_logits          mobilenetv2_035 (non-square input)
    v2_digits_input [2,3,8,8] / v2_digits_logits   the same weights with a stride-1 stem and a
        stride-1 blocks.1.0.conv_dw (tessera's `mobilenetv2_digits` with in_chans=3)
    v3_input [1,3,56,40] / v3_logits          mobilenetv3_small_050
    v3_swish_logits                            the same weights, timm act_layer='swish'
    v3_digits_input [2,3,8,8] / v3_digits_logits   stride-1 stem and blocks.0.0.conv_dw
        (tessera's `mobilenetv3_digits` with in_chans=3)
- mobilenet_keys_<arch>.txt: `name shape` of every state_dict entry of the full-size
  `mobilenetv2_100`, `mobilenetv3_large_100`, `mobilenetv3_small_100` (num_batches_tracked
  dropped), in timm's order.

--full DIR writes DIR/<arch>.safetensors (F32 state dict) and DIR/<arch>_io.safetensors
(input [1,3,224,224], logits) for the three full-size architectures; the ignored Rust test
`full_size_timm_parity` checks them when TESSERA_MOBILENET_FULL=DIR is set.
"""
import argparse
import os

import timm
import torch
from safetensors.torch import save_file

OUT = os.path.join("tests", "fixtures", "models")


def randomise(model, gen, f16):
    """Random weights, biases and BN statistics; optionally rounded through float16."""
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                v = torch.rand(t.shape, generator=gen) * 1.5 + 0.5
            elif name.endswith("running_mean"):
                v = torch.randn(t.shape, generator=gen) * 0.2
            elif ".bn" in name or name.startswith("bn"):
                if name.endswith("weight"):
                    v = torch.rand(t.shape, generator=gen) * 0.8 + 0.6
                else:
                    v = torch.randn(t.shape, generator=gen) * 0.1
            elif name.endswith("bias"):
                v = torch.randn(t.shape, generator=gen) * 0.1
            else:
                fan_in = t[0].numel()
                v = torch.randn(t.shape, generator=gen) * (2.0 / fan_in) ** 0.5
            if f16:
                v = v.half().float()
            t.copy_(v)
    model.eval()


def state_dict(model, dtype):
    return {
        k: v.detach().to(dtype).contiguous()
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }


def logits(model, x):
    with torch.no_grad():
        return model(x).float().contiguous()


def unstride(model, block):
    """tessera's small-image presets: stride-1 stem and stride-1 depthwise conv in `block`
    (padding unchanged); the block gets the residual timm's builder gives a stride-1 block
    whose input and output channels match."""
    model.conv_stem.stride = (1, 1)
    block.conv_dw.stride = (1, 1)
    if hasattr(block, "conv_pwl"):  # InvertedResidual
        block.has_skip = block.conv_pw.in_channels == block.conv_pwl.out_channels
    else:  # DepthwiseSeparableConv
        block.has_skip = block.conv_dw.in_channels == block.conv_pw.out_channels


def small(gen):
    io = {}
    v2 = timm.create_model("mobilenetv2_035", num_classes=10)
    randomise(v2, gen, True)
    save_file(state_dict(v2, torch.float16), os.path.join(OUT, "mobilenetv2_035.safetensors"))
    io["v2_input"] = torch.randn(2, 3, 40, 48, generator=gen)
    io["v2_logits"] = logits(v2, io["v2_input"])
    unstride(v2, v2.blocks[1][0])
    io["v2_digits_input"] = torch.randn(2, 3, 8, 8, generator=gen)
    io["v2_digits_logits"] = logits(v2, io["v2_digits_input"])

    v3 = timm.create_model("mobilenetv3_small_050", num_classes=10)
    randomise(v3, gen, True)
    sd = state_dict(v3, torch.float16)
    save_file(sd, os.path.join(OUT, "mobilenetv3_small_050.safetensors"))
    io["v3_input"] = torch.randn(1, 3, 56, 40, generator=gen)
    io["v3_logits"] = logits(v3, io["v3_input"])
    v3s = timm.create_model("mobilenetv3_small_050", num_classes=10, act_layer="swish")
    v3s.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
    v3s.eval()
    io["v3_swish_logits"] = logits(v3s, io["v3_input"])
    unstride(v3, v3.blocks[0][0])
    io["v3_digits_input"] = torch.randn(2, 3, 8, 8, generator=gen)
    io["v3_digits_logits"] = logits(v3, io["v3_digits_input"])
    save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(OUT, "mobilenet_io.safetensors"))

    for arch in ["mobilenetv2_100", "mobilenetv3_large_100", "mobilenetv3_small_100"]:
        m = timm.create_model(arch)
        n = sum(p.numel() for p in m.parameters())
        with open(os.path.join(OUT, f"mobilenet_keys_{arch}.txt"), "w") as f:
            f.write(f"# timm {timm.__version__} {arch}: {n} parameters; name shape\n")
            for k, v in m.state_dict().items():
                if not k.endswith("num_batches_tracked"):
                    f.write(f"{k} {','.join(str(s) for s in v.shape)}\n")


def full(out_dir, gen):
    os.makedirs(out_dir, exist_ok=True)
    for arch in ["mobilenetv2_100", "mobilenetv3_large_100", "mobilenetv3_small_100"]:
        m = timm.create_model(arch)
        randomise(m, gen, False)
        x = torch.randn(1, 3, 224, 224, generator=gen)
        save_file(state_dict(m, torch.float32), os.path.join(out_dir, f"{arch}.safetensors"))
        save_file({"input": x, "logits": logits(m, x)}, os.path.join(out_dir, f"{arch}_io.safetensors"))
        print(arch, "written")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", help="write full-size checks to this directory (not committed)")
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(20260503)
    if args.full:
        full(args.full, gen)
    else:
        os.makedirs(OUT, exist_ok=True)
        small(gen)


if __name__ == "__main__":
    main()
