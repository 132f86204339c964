#!/usr/bin/env bash
# The kernels' and the runtime's tests (lopper-kernels, lopper-model) under AddressSanitizer:
# nightly rustc with -Zsanitizer=address on an explicit --target, so build scripts and proc
# macros stay uninstrumented. The standard library is not rebuilt (no rust-src here), so its
# own accesses are not checked; every access from lopper's code is. Extra arguments go to
# `cargo test` (for example a test name).
#
#   scripts/asan.sh           # every test of both crates
#   scripts/asan.sh --quick   # without tests/bert.rs (all-MiniLM-L6-v2 passes, slow under ASan)
#
# Leak checking is on. The build has its own target folder ($CARGO_TARGET_DIR-asan).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "asan.sh: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
  exit 1
fi
target="$(rustc +nightly -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="-Zsanitizer=address -Cunsafe-allow-abi-mismatch=sanitizer"
export RUSTDOCFLAGS="$RUSTFLAGS"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
tests=(--tests)
if [ "${1:-}" = "--quick" ]; then
  shift
  tests=()
  for f in crates/lopper-kernels/tests/*.rs crates/lopper-model/tests/*.rs; do
    name=$(basename "$f" .rs)
    [ "$name" = bert ] || tests+=(--test "$name")
  done
fi
cargo +nightly test --release --target "$target" \
  --target-dir "${ASAN_TARGET_DIR:-${CARGO_TARGET_DIR:-target}-asan}" \
  -p lopper-kernels -p lopper-model --lib "${tests[@]}" "$@"
