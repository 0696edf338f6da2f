#!/usr/bin/env bash
# Coverage-guided fuzzing: every fuzz target (or those named) under
# libFuzzer for SECONDS each, starting from the checked-in corpus
# (fuzz/corpus/<target>/, read only). New inputs go to a scratch corpus;
# a crash (a panic, or one allocation above the fuzz crate's limit) is
# saved under fuzz/failures/<target>/ and the script exits 1. Prints per
# target: inputs run, inputs a second, coverage (edges and features
# libFuzzer counted) and the corpus it grew.
#
#   bash scripts/fuzz-libfuzzer.sh [SECONDS=300] [TARGET...]
#
# The build instruments every crate with SanitizerCoverage (stable
# -C passes / -C llvm-args; debug assertions and overflow checks on) in
# its own target directory, so it does not disturb the test build; it
# needs a C++ compiler for libFuzzer itself (g++ or clang++).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-300}"
[ $# -gt 0 ] && shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(pack index manifest config key sealed records tar qdrant cairn_toml)
command -v c++ >/dev/null || { echo "needs a C++ compiler: apt-get install g++" >&2; exit 1; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cairn-target}/libfuzzer"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps the instrumentation out of build scripts and
# proc macros, which run on the host without libFuzzer.
host="$(rustc -vV | sed -n 's/^host: //p')"
cargo build --release -q -p cairn-fuzz --features libfuzzer --bin cairn-libfuzzer --target "$host"
bin="$CARGO_TARGET_DIR/$host/release/cairn-libfuzzer"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=0
printf '%-12s %12s %10s %8s %8s %8s %8s\n' target inputs inputs/s edges features corpus crashes
for t in "${targets[@]}"; do
  [ -d "fuzz/corpus/$t" ] || { echo "no corpus for $t (fuzz/corpus/$t)" >&2; exit 1; }
  mkdir -p "$scratch/$t" "fuzz/failures/$t"
  before=$(ls "fuzz/failures/$t" | wc -l)
  set +e
  CAIRN_FUZZ_TARGET="$t" "$bin" -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=1048576 \
    -artifact_prefix="fuzz/failures/$t/" -print_final_stats=1 \
    "$scratch/$t" "fuzz/corpus/$t" > "$scratch/$t.log" 2>&1
  code=$?
  set -e
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch/$t.log")
  secs=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$scratch/$t.log")
  last=$(grep -E '^#[0-9]+' "$scratch/$t.log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
  crashes=$(( $(ls "fuzz/failures/$t" | wc -l) - before ))
  printf '%-12s %12s %10s %8s %8s %8s %8s\n' "$t" "${runs:-?}" "${secs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$crashes"
  if [ "$code" -ne 0 ] || [ "$crashes" -ne 0 ]; then
    failed=1
    echo "== $t failed (exit $code); its log:" >&2
    tail -40 "$scratch/$t.log" >&2
  fi
done
exit "$failed"
