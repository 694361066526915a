#!/usr/bin/env python3
"""Data the models crate embeds about timm's pretrained weights, and the fixtures that test them.

Writes (committed; CI does not run this script):

  crates/models/data/pretrained_cfgs.tsv   one row per architecture of the zoo that timm knows:
                                           the default pretrained tag and Hugging Face hub id, and
                                           the evaluation preprocessing timm resolves for it
                                           (input size, crop_pct, crop mode, interpolation, mean,
                                           std, classes), from `timm.create_model(name).pretrained_cfg`
  crates/models/data/imagenet1k_labels.txt the 1000 ImageNet-1k class names in class-index order:
                                           timm's `imagenet_synsets.txt` order, each synset's
                                           lemma from `imagenet_synset_to_lemma.txt`
  tests/fixtures/pretrained/vit_hub_layout.safetensors
                                           a small ViT (vit_tiny_patch16_224 with img_size=32,
                                           patch_size=8, embed_dim=48, depth=2, num_heads=3, 1000
                                           classes), random weights, written as the timm files on
                                           the hub are: `model.state_dict()` keys, float32,
                                           `{"format": "pt"}` metadata
  tests/fixtures/pretrained/photo.png      a 45x31 RGB test picture (smooth gradients + noise)
  tests/fixtures/pretrained/vit_hub_layout_io.safetensors
                                           "input": photo.png through timm's evaluation transform
                                           for that model (resize 35 bicubic, centre crop 32,
                                           mean = std = 0.5) [1, 3, 32, 32]; "logits" [1, 1000];
                                           "bilinear": the same picture at 16x16 with bilinear
                                           resize and crop_pct 0.875, ImageNet mean/std

Usage:  python3 scripts/pretrained_data.py
Tested with torch 2.15 (CPU), timm 1.0.31, safetensors 0.8, Pillow 13.
"""

import math
import os

import numpy as np
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.data import create_transform, resolve_data_config

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DATA = os.path.join(ROOT, "crates", "models", "data")
FIX = os.path.join(ROOT, "tests", "fixtures", "pretrained")

# Every timm architecture of tessera's zoo (the digits / CIFAR presets are tessera's own).
ZOO = [
    "vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224",
    "mobilenetv2_035", "mobilenetv2_050", "mobilenetv2_075", "mobilenetv2_100", "mobilenetv2_140",
    "mobilenetv3_large_075", "mobilenetv3_large_100",
    "mobilenetv3_small_050", "mobilenetv3_small_075", "mobilenetv3_small_100",
    "resnet50", "resnet101", "seresnet50", "seresnet101",
]


def write_cfgs():
    rows = ["# arch\thf_hub_id\ttag\tinput_size\tcrop_pct\tcrop_mode\tinterpolation\tmean\tstd\tnum_classes"]
    for name in ZOO:
        c = timm.create_model(name, pretrained=False).pretrained_cfg
        hub = c.get("hf_hub_id") or "-"
        fmt = lambda v: ",".join(repr(float(x)) for x in v)
        rows.append("\t".join([
            name, hub, c.get("tag") or "-", ",".join(str(x) for x in c["input_size"]),
            repr(float(c["crop_pct"])), c.get("crop_mode") or "center", c["interpolation"],
            fmt(c["mean"]), fmt(c["std"]), str(c["num_classes"]),
        ]))
    with open(os.path.join(DATA, "pretrained_cfgs.tsv"), "w") as f:
        f.write("\n".join(rows) + "\n")


def write_labels():
    info = os.path.join(os.path.dirname(timm.__file__), "data", "_info")
    synsets = open(os.path.join(info, "imagenet_synsets.txt")).read().split()
    lemma = {}
    for line in open(os.path.join(info, "imagenet_synset_to_lemma.txt")):
        k, v = line.rstrip("\n").split("\t", 1)
        lemma[k] = v
    assert len(synsets) == 1000
    with open(os.path.join(DATA, "imagenet1k_labels.txt"), "w") as f:
        for s in synsets:
            f.write(lemma[s] + "\n")


def write_fixtures():
    os.makedirs(FIX, exist_ok=True)
    gen = torch.Generator().manual_seed(17)
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                          embed_dim=48, depth=2, num_heads=3, num_classes=1000).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p[0].numel()))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    sd = {k: v.contiguous() for k, v in m.state_dict().items()}
    save_file(sd, os.path.join(FIX, "vit_hub_layout.safetensors"), metadata={"format": "pt"})

    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:31, 0:45]
    img = np.stack([xx * 5.5, yy * 8.0, (xx + yy) * 3.0], axis=-1) + rng.normal(0, 20, (31, 45, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    Image.fromarray(img, "RGB").save(os.path.join(FIX, "photo.png"))

    pil = Image.open(os.path.join(FIX, "photo.png")).convert("RGB")
    cfg = resolve_data_config({"input_size": (3, 32, 32)}, model=m)
    x = create_transform(**cfg)(pil).unsqueeze(0)
    with torch.no_grad():
        logits = m(x)
    bil = create_transform(input_size=(3, 16, 16), crop_pct=0.875, interpolation="bilinear",
                           mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))(pil).unsqueeze(0)
    save_file({"input": x.contiguous(), "logits": logits.contiguous(), "bilinear": bil.contiguous()},
              os.path.join(FIX, "vit_hub_layout_io.safetensors"))
    print("data config", cfg, "top-5", logits.topk(5).indices.tolist())


if __name__ == "__main__":
    write_cfgs()
    write_labels()
    write_fixtures()
