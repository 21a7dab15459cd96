#!/usr/bin/env bash
# Short cargo-fuzz runs of every decoder target (fuzz/fuzz_targets): JSON/YAML/protobuf
# bodies, label and field selectors, patches. Each target runs FUZZ_RUNS inputs (default
# 500,000; at most FUZZ_SECONDS, default 60) from the committed seeds (fuzz/seeds/<target>)
# plus what earlier runs found, with a fixed libFuzzer seed (FUZZ_SEED, default 1) so a
# CI run repeats exactly what ran before it landed; a crash fails the run and leaves the
# input under fuzz/artifacts/<target>/. Longer hunts: FUZZ_RUNS=-1 FUZZ_SECONDS=600
# FUZZ_SEED=0 (0: a new seed each run).
#
# cargo-fuzz wants a nightly compiler for its sanitizer flags; with `--sanitizer none` the
# coverage instrumentation it needs works on stable once RUSTC_BOOTSTRAP allows the
# unstable flag it passes, so the machine's one stable toolchain is enough.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-60}"
runs="${FUZZ_RUNS:-500000}"
seed="${FUZZ_SEED:-1}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
echo "== cargo fuzz build (sanitizer none)"
cargo fuzz build --sanitizer none --release
status=0
mkdir -p logs
for target in $(cargo fuzz list); do
  echo "== fuzz $target: $runs inputs (at most ${seconds}s), seed $seed"
  mkdir -p "corpus/$target"
  if cargo fuzz run --sanitizer none --release "$target" "corpus/$target" "seeds/$target" -- \
      -runs="$runs" -seed="$seed" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
      -print_final_stats=1 >"logs/$target.log" 2>&1; then
    grep -E "^stat::(number_of_executed_units|new_units_added|peak_rss_mb)" "logs/$target.log" || true
  else
    echo "!! $target failed: the input is under fuzz/artifacts/$target/; the log's end:"
    tail -40 "logs/$target.log"
    status=1
  fi
done
exit $status
