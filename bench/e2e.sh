#!/bin/sh
# End-to-end figures for docs/perf/end-to-end.md: trains (or reuses) the full-length LeNet
# recipes, exports f32 and int8 .lop files, evaluates them through the runtime, then runs the
# ONNX Runtime peer script, which times `lopper bench` and ORT side by side in one run.
#
#   sh bench/e2e.sh [RUNS_DIR] [OUT_DIR]      (defaults: /var/cache/lopper/runs and /var/cache/lopper/e2e;
# the *.json results go into docs/perf/e2e/, never the .lop files)
#
# Needs: Fashion-MNIST (apt-get install -y dataset-fashion-mnist) and
#        pip install numpy onnx onnxruntime safetensors
set -eu
RUNS=${1:-/var/cache/lopper/runs}
OUT=${2:-/var/cache/lopper/e2e}
LOPPER=${LOPPER:-${CARGO_TARGET_DIR:-target}/release/lopper}
mkdir -p "$RUNS" "$OUT"
cargo build --release -p lopper-cli
for run in lenet300-dense lenet300-gradual95 lenet300-gradual95-1x8 lenet5-dense lenet5-gradual95 \
    lenet5-gradual95-4x1; do
    if [ ! -f "$RUNS/$run/report.json" ]; then
        "$LOPPER" train --recipe "recipes/$run.toml" --out "$RUNS/$run"
    fi
done
for m in lenet300 lenet5; do
    "$LOPPER" export "$RUNS/$m-dense" --format dense --out "$OUT/$m-dense.lop"
    "$LOPPER" export "$RUNS/$m-gradual95" --out "$OUT/$m-gradual95.lop"
    "$LOPPER" export "$RUNS/$m-gradual95" --dtype i8 --out "$OUT/$m-gradual95-int8.lop"
    for f in "$m-dense" "$m-gradual95" "$m-gradual95-int8"; do
        "$LOPPER" eval "$OUT/$f.lop" --json > "$OUT/$f.eval.json"
        "$LOPPER" inspect "$OUT/$f.lop" --json > "$OUT/$f.inspect.json"
    done
    for f in "$m-gradual95" "$m-gradual95-int8"; do
        python3 bench/peers/lop_vs_ort.py "$OUT/$f.lop" --lopper "$LOPPER" \
            --batch 1,64 --threads 1,2 --json "$OUT/$f.peers.json"
    done
done
# Block-pruned recipes (pattern = "1x8" / "4x1"): same files and checks, batch 1 and 64.
for f in lenet300-gradual95-1x8 lenet5-gradual95-4x1; do
    "$LOPPER" export "$RUNS/$f" --out "$OUT/$f.lop"
    "$LOPPER" export "$RUNS/$f" --dtype i8 --out "$OUT/$f-int8.lop"
    for g in "$f" "$f-int8"; do
        "$LOPPER" eval "$OUT/$g.lop" --json > "$OUT/$g.eval.json"
        "$LOPPER" inspect "$OUT/$g.lop" --json > "$OUT/$g.inspect.json"
    done
    python3 bench/peers/lop_vs_ort.py "$OUT/$f.lop" --lopper "$LOPPER" \
        --batch 1,64 --threads 1,2 --json "$OUT/$f.peers.json"
done
