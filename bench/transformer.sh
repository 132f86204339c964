#!/usr/bin/env bash
# Reproduces docs/perf/transformer.md: one-shot pruning of all-MiniLM-L6-v2 with every method at
# 50 %, 2:4, 70 % and 90 %, and SparseGPT in 4x1 blocks at 50, 70 and 90 % (fidelity on the 128
# held-out sentences of data/sentences/eval.txt, calibration on the 1024 of calib.txt), then speed
# of the 90 % (unstructured and 4x1) and 50 % SparseGPT models against
# the dense model (lopper bench) and against ONNX Runtime (bench/peers/encoder_vs_ort.py);
# DeepSparse runs separately (bench/peers/deepsparse_encoder.py, its own venv).
#
#   bench/transformer.sh [OUT_DIR]       # default /var/cache/lopper/bert
#
# Takes about 50 minutes on 2 cores. Reports land in OUT_DIR as METHOD-TARGET.report.{json,md}.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-/var/cache/lopper/bert}"
mkdir -p "$out"
model=$(scripts/fetch-minilm.sh)
cargo build --release -p lopper-cli
lopper="${CARGO_TARGET_DIR:-target}/release/lopper"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
for method in magnitude wanda sparsegpt; do
  for target in 0.5 2:4 0.7 0.9; do
    name="$method-${target/:/of}"
    if [ -s "$out/$name.report.json" ]; then continue; fi
    if [[ "$target" == *:* ]]; then flag=(--pattern "$target"); else flag=(--sparsity "$target"); fi
    echo "== $name" >&2
    "$lopper" prune "$model" --method "$method" "${flag[@]}" \
      --calib data/sentences/calib.txt --eval data/sentences/eval.txt --out "$out/$name.lop" >/dev/null
  done
done
# SparseGPT in 4x1 blocks (four output rows pruned together per input, run by the BSR 4x1 kernels).
for target in 0.5 0.7 0.9; do
  name="sparsegpt-$target-4x1"
  if [ -s "$out/$name.report.json" ]; then continue; fi
  echo "== $name" >&2
  "$lopper" prune "$model" --method sparsegpt --sparsity "$target" --pattern 4x1 \
    --calib data/sentences/calib.txt --eval data/sentences/eval.txt --out "$out/$name.lop" >/dev/null
done
cp "$out/fidelity.png" docs/perf/transformer-fidelity.png
for m in sparsegpt-0.9 sparsegpt-0.9-4x1 sparsegpt-0.5; do
  python3 bench/peers/encoder_vs_ort.py "$out/$m.lop" --dense "$model" --batch 1,8 --threads 1,2 \
    --seq 128 --save-onnx "$out/$m.onnx" --json "docs/perf/transformer/$m-vs-ort.jsonl"
done
