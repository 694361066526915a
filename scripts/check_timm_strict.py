#!/usr/bin/env python3
"""Checks that a `tessera train --save` file is a timm state dict: timm loads it with
`strict=True`, and timm's eval logits on an input match the ones `tessera run` wrote.

Usage:
  python3 scripts/check_timm_strict.py WEIGHTS.safetensors ARCH [--kw key=value ...]
      [--input x.npy --logits tessera_logits.npy]

ARCH and the --kw arguments are what `timm.create_model` takes (e.g. `--kw num_classes=3
--kw img_size=32`); values are parsed as Python literals. Without --input only the strict load
is checked. Exit status 0 when everything holds, 1 otherwise (the reason is printed).

Example (a fine-tuned small MobileNetV3 with 3 classes):
  tessera train mobilenetv3_small_050 --img-size 32 --dataset folder:photos --epochs 1 \
      --save ft.safetensors
  python3 -c "import numpy as np; np.save('x.npy', np.random.rand(2, 3, 32, 32).astype('f4'))"
  tessera run mobilenetv3_small_050 --img-size 32 --num-classes 3 --weights ft.safetensors \
      --input x.npy --output logits.npy
  python3 scripts/check_timm_strict.py ft.safetensors mobilenetv3_small_050 \
      --kw img_size=32 --kw num_classes=3 --input x.npy --logits logits.npy

Tested with torch 2.15 (CPU), timm 1.0.31, safetensors.
"""

import argparse
import ast
import sys

import numpy as np
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("weights")
    ap.add_argument("arch")
    ap.add_argument("--kw", action="append", default=[], help="key=value for timm.create_model")
    ap.add_argument("--input", help=".npy input batch [N, C, H, W]")
    ap.add_argument("--logits", help=".npy logits tessera computed for --input")
    ap.add_argument("--tol", type=float, default=1e-4, help="max |difference| / max |logit|")
    a = ap.parse_args()
    kwargs = {}
    for kv in a.kw:
        k, _, v = kv.partition("=")
        try:
            kwargs[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            kwargs[k] = v
    with safe_open(a.weights, "pt") as f:
        meta = f.metadata() or {}
    sd = load_file(a.weights)
    optim = [k for k in sd if k.startswith("__optim__")]
    if optim:
        print(f"FAIL: {len(optim)} optimizer entries (e.g. {optim[0]}) in a weights file")
        return 1
    model = timm.create_model(a.arch, pretrained=False, **kwargs)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        print(f"FAIL: strict load: {e}")
        return 1
    expected = set(model.state_dict().keys())
    extra_bookkeeping = sorted(expected - set(sd))
    print(f"strict load OK: {len(sd)} tensors, metadata {meta}")
    if extra_bookkeeping:
        print(f"  (timm filled in {len(extra_bookkeeping)} num_batches_tracked counters)")
        if any(not k.endswith("num_batches_tracked") for k in extra_bookkeeping):
            print("FAIL: missing non-bookkeeping keys")
            return 1
    if a.input:
        x = torch.from_numpy(np.load(a.input))
        model.eval()
        with torch.no_grad():
            ref = model(x).numpy()
        if a.logits:
            got = np.load(a.logits)
            if got.shape != ref.shape:
                print(f"FAIL: logits shape {got.shape} vs timm {ref.shape}")
                return 1
            rel = float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-12))
            print(f"logits vs timm: max |diff| / max |logit| = {rel:.2e}")
            if not rel <= a.tol:
                print(f"FAIL: above {a.tol}")
                return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
