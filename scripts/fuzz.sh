#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ (libFuzzer with AddressSanitizer, nightly toolchain) for
# SECONDS each (default 60), or until FUZZ_RUNS executions when that is set, one after another,
# and prints a Markdown table row per target: executions, seconds, corpus size, peak RSS and
# the outcome. A crash, timeout (10 s per input) or out-of-memory (RSS over 2 GB) stops the
# script with that target's exit code and leaves the input in fuzz/artifacts/TARGET/. (The
# timeout is wall time: a fuzzer stopped with SIGSTOP reports one when it resumes.)
#
#   scripts/fuzz.sh            # 60 s per target
#   scripts/fuzz.sh 30         # as CI runs it
#   FUZZ_RUNS=10000000 scripts/fuzz.sh 3600    # 10^7 executions or one hour, whichever first
#   FUZZ_TARGETS="onnx npz" scripts/fuzz.sh 30
#   FUZZ_SKIP_BUILD=1 ...      # run the binaries already built
#
# Seeds come from fuzz/seeds/TARGET/ (committed; rebuilt by fuzz/make_seeds.py); what the
# fuzzer adds goes to a working corpus outside the repository ($LOPPER_CACHE/fuzz/corpus). The
# table is also appended to $FUZZ_REPORT (default $LOPPER_CACHE/fuzz/report.md).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
cache="${LOPPER_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/lopper}"
report="${FUZZ_REPORT:-$cache/fuzz/report.md}"
mkdir -p "$cache/fuzz/corpus" "$(dirname "$report")"

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz.sh: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz@0.13.2
fi
# The fuzz build has its own flags (sanitizer, coverage), so its own target folder; kept
# outside the repository like the main one.
target_dir="${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-target}-fuzz}"
targets="${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}"
if [ -n "${FUZZ_SKIP_BUILD:-}" ]; then
  : # a campaign running target by target builds once, first
elif [ -z "${FUZZ_TARGETS:-}" ]; then
  cargo +nightly fuzz build --target-dir "$target_dir" 2>&1 | tail -n 3
else
  for t in $targets; do cargo +nightly fuzz build --target-dir "$target_dir" "$t" 2>&1 | tail -n 3; done
fi

echo "| target | executions | seconds | corpus files | peak RSS MB | result |" | tee -a "$report"
echo "|---|---|---|---|---|---|" | tee -a "$report"
bin_dir="$target_dir/$(rustc +nightly -vV | sed -n 's/^host: //p')/release"
for t in $targets; do
  work="$cache/fuzz/corpus/$t"
  mkdir -p "$work" "fuzz/artifacts/$t"
  log="$cache/fuzz/$t.log"
  runs=()
  if [ -n "${FUZZ_RUNS:-}" ]; then runs=(-runs="$FUZZ_RUNS"); fi
  # The binaries built above, run directly: `cargo fuzz run` would rebuild first, and a source
  # edited meanwhile would then be fuzzed half-way through a campaign.
  set +e
  "$bin_dir/$t" "$work" "fuzz/seeds/$t" -artifact_prefix="fuzz/artifacts/$t/" \
    -max_total_time="$secs" "${runs[@]}" -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  # (`|| true`: a run stopped by a finding prints no "Done" line, and the row must still show.)
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
  took=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | grep -o 'in [0-9]*' | grep -o '[0-9]*' | tail -1 || true)
  rss=$(grep -o 'stat::peak_rss_mb: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
  files=$(find "$work" -type f | wc -l)
  result=ok
  if [ "$rc" != 0 ]; then result="FAILED (exit $rc, see $log and fuzz/artifacts/$t/)"; fi
  echo "| $t | ${execs:-?} | ${took:-$secs} | $files | ${rss:-?} | $result |" | tee -a "$report"
  if [ "$rc" != 0 ]; then
    grep -m 20 -E 'ERROR|panicked|SUMMARY|Test unit written' "$log" >&2 || true
    exit "$rc"
  fi
done
