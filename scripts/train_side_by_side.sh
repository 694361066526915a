#!/bin/bash
# Side-by-side SGD training-step times, tessera vs PyTorch eager, in alternating rounds
# (tessera then PyTorch, model by model), one JSON object per line on stdout. Run on an idle
# machine from the project root after `cargo build --release -p tessera-cli`; needs
# `pip install torch timm` and ../shared/bench/torch_baselines.py. Usage:
#   scripts/train_side_by_side.sh [ROUNDS] > rounds.jsonl
set -euo pipefail
rounds=${1:-3}
bench=$(cd "$(dirname "$0")/../../shared/bench" && pwd)
for round in $(seq 1 "$rounds"); do
  for pair in vit_tiny_patch16_224:vit_tiny mobilenetv2_100:mobilenet_v2 \
              mobilenetv3_large_100:mobilenet_v3_large seresnet101:se_resnet101 \
              vit_base_patch16_224:vit_b16; do
    ours=${pair%%:*}; theirs=${pair##*:}
    echo "{\"round\":$round,\"side\":\"tessera\",\"r\":$(./target/release/tessera bench "$ours" --train --threads 2 --json | tail -1)}"
    echo "{\"round\":$round,\"side\":\"torch\",\"r\":$(cd "$bench" && THREADS=2 python3 torch_baselines.py --train-only "$theirs" 2>/dev/null | tail -1)}"
  done
done
