#!/usr/bin/env python3
"""PyTorch/timm parity fixtures for tessera's ViT (crates/models/src/archs/vit.rs).

Writes, under tests/fixtures/models/ (committed, ~310 KB; CI does not run this script):

  vit_small_variant.safetensors     state dict of timm's VisionTransformer with img_size=32,
                                    patch_size=8, embed_dim=48, depth=2, num_heads=3,
                                    num_classes=10 (built from the name vit_tiny_patch16_224),
                                    every tensor randomised (LayerNorm affine included)
  vit_small_variant_io.safetensors  "input" [2, 3, 32, 32], eval "logits" [2, 10], and the
                                    attention probabilities "attn.{i}" [2, 3, 17, 17] of each block
  vit_tiny_patch16_224.keys.txt     "name shape" of every state_dict entry of the full-size
                                    timm.create_model('vit_tiny_patch16_224'), in order

With --full DIR it also writes full-size random-weight checkpoints (NOT to be committed:
22-350 MB each) for the ignored test `full_size_timm_checkpoints` of tests/models_vit.rs:

  DIR/{name}.safetensors, DIR/{name}_io.safetensors ("input" [1, 3, 224, 224], "logits")

Usage:  python3 scripts/fixtures_vit.py [--full /tmp/tessera_vit_full]
Tested with torch 2.15 (CPU), timm 1.0.31, safetensors.
"""

import argparse
import math
import os

import timm
import torch
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "models")
FULL_NAMES = ["vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224"]


def randomise(model, gen):
    """Every parameter random, so a wrong name, layout or op cannot cancel out."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and name not in ("cls_token", "pos_embed"):
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            elif name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            else:  # biases, LayerNorm shifts, cls_token, pos_embed
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))


def attention_maps(model, x):
    """The softmax probabilities of every block, recomputed from the input of each attn."""
    maps = []

    def hook(attn, inputs, _out):
        (t,) = inputs
        b, n, c = t.shape
        h = attn.num_heads
        qkv = attn.qkv(t).reshape(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
        q, k = qkv[0], qkv[1]
        maps.append(((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1))

    handles = [blk.attn.register_forward_hook(hook) for blk in model.blocks]
    with torch.no_grad():
        logits = model(x)
    for hd in handles:
        hd.remove()
    return logits, maps


def contiguous(sd):
    return {k: v.detach().contiguous() for k, v in sd.items()}


def small_variant():
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224",
        img_size=32,
        patch_size=8,
        embed_dim=48,
        depth=2,
        num_heads=3,
        num_classes=10,
    ).eval()
    gen = torch.Generator().manual_seed(1234)
    randomise(model, gen)
    x = torch.randn((2, 3, 32, 32), generator=gen)
    logits, maps = attention_maps(model, x)
    save_file(contiguous(model.state_dict()), os.path.join(OUT, "vit_small_variant.safetensors"))
    io = {"input": x, "logits": logits}
    for i, m in enumerate(maps):
        io[f"attn.{i}"] = m
    save_file(contiguous(io), os.path.join(OUT, "vit_small_variant_io.safetensors"))
    print("small variant: logits", tuple(logits.shape), "max |logit|", logits.abs().max().item())


def key_list():
    sd = timm.create_model("vit_tiny_patch16_224").state_dict()
    path = os.path.join(OUT, "vit_tiny_patch16_224.keys.txt")
    with open(path, "w") as f:
        for k, v in sd.items():
            f.write(f"{k} {'x'.join(str(s) for s in v.shape)}\n")
    print("keys:", len(sd), "->", path)


def full(dir_):
    os.makedirs(dir_, exist_ok=True)
    for name in FULL_NAMES:
        torch.manual_seed(0)
        model = timm.create_model(name).eval()
        gen = torch.Generator().manual_seed(99)
        randomise(model, gen)
        x = torch.randn((1, 3, 224, 224), generator=gen)
        with torch.no_grad():
            logits = model(x)
        save_file(contiguous(model.state_dict()), os.path.join(dir_, f"{name}.safetensors"))
        save_file({"input": x, "logits": logits.contiguous()}, os.path.join(dir_, f"{name}_io.safetensors"))
        print(name, "params", sum(p.numel() for p in model.parameters()), "->", dir_)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", metavar="DIR", help="also write full-size random checkpoints to DIR")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    small_variant()
    key_list()
    if args.full:
        full(args.full)


if __name__ == "__main__":
    main()
