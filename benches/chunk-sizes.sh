#!/usr/bin/env bash
# Measures dedup against metadata overhead for several average chunk sizes:
# backs up every day of a snapshot series (default ../shared/fixtures/qdrant-churn)
# into a fresh repository per size and prints repository size after day 0,
# growth over the remaining days, and index + manifest bytes.
# Usage: [INIT_FLAGS=--no-tar-aware] benches/chunk-sizes.sh [SERIES_DIR] [SIZES...]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
bench_password
setup_system
build_cairn
series="${1:-../shared/fixtures/qdrant-churn}"
shift || true
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(8KiB 16KiB 32KiB 64KiB 128KiB 256KiB 1MiB)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
printf "%-8s %12s %12s %12s %10s %10s %8s\n" avg day0_bytes final_bytes growth index manifests meta%
for s in "${sizes[@]}"; do
  export CAIRN_REPOSITORY="$work/repo-$s" CAIRN_CACHE_DIR="$work/cache"
  "$cairn" init --avg-chunk-size "$s" ${INIT_FLAGS:-} >/dev/null
  first=""
  for day in "$series"/day*; do
    "$cairn" -q backup "$day" >/dev/null
    [ -n "$first" ] || first=$("$cairn" --json stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["total_bytes"])')
  done
  "$cairn" --json stats | python3 -c '
import json, sys
s = json.load(sys.stdin); first = int(sys.argv[2])
meta = s["index_bytes"] + s["snapshot_bytes"]
print("%-8s %12d %12d %12d %10d %10d %7.2f%%" % (sys.argv[1], first, s["total_bytes"], s["total_bytes"] - first,
      s["index_bytes"], s["snapshot_bytes"], 100.0 * meta / s["total_bytes"]))' "$s" "$first"
done
