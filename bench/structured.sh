#!/usr/bin/env bash
# Reproduces the speed half of docs/perf/structured.md: ResNet-20 with half of every channel
# group removed (the shapes recipes/resnet20-structured50.toml produces: layer-wise 50 % of each
# group, residual groups included) against the unpruned ResNet-20, in lopper's runtime
# (`lopper bench --baseline`) and in ONNX Runtime (bench/peers/lop_vs_ort.py --baseline), each
# pair timed interleaved in one run.
#
#   bench/structured.sh [OUT_DIR]       # default /var/cache/lopper/structured-speed
#
# Speed depends only on the shapes, so both models come from two short trainings (2 epochs on
# 1 280 images; the structured one prunes at the start of epoch 2): a few minutes instead of
# the hours of the full recipes, whose accuracy docs/perf/accuracy.md reports. Needs
# Fashion-MNIST and pip: numpy onnx onnxruntime safetensors.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-/var/cache/lopper/structured-speed}"
mkdir -p "$out"
cargo build --release -p lopper-cli
lopper="${CARGO_TARGET_DIR:-target}/release/lopper"
common='model = "resnet20"
seed = 42
epochs = 2
train_limit = 1280
[optimizer]
kind = "sgd"
lr = 0.05'
printf '%s\n' "$common" > "$out/resnet20-dense-short.toml"
printf '%s\n[structured]\ncriterion = "bn_gamma"\ntarget = 0.5\nat_epochs = [1]\n' "$common" \
  > "$out/resnet20-structured50-short.toml"
for r in resnet20-dense-short resnet20-structured50-short; do
  "$lopper" train --recipe "$out/$r.toml" --out "$out/$r" --test-limit 500
  rm -f "$out/$r/model.lop.plan.json"
done
"$lopper" inspect "$out/resnet20-structured50-short/model.lop" | head -3
"$lopper" bench "$out/resnet20-structured50-short/model.lop" \
  --baseline "$out/resnet20-dense-short/model.lop" --batch 1,64 --threads 1,2 \
  --out "$out/lopper-bench.jsonl"
python3 bench/peers/lop_vs_ort.py "$out/resnet20-structured50-short/model.lop" \
  --baseline "$out/resnet20-dense-short/model.lop" --lopper "$lopper" --batch 1,64 \
  --threads 1,2 --json "$out/ort.json"
