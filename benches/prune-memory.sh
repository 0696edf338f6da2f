#!/usr/bin/env bash
# Prune's memory, the local cache's size and its lookup rate, per chunk, at
# growing chunk counts: for each size, a fresh repository of random data cut
# into ~1 KiB chunks (so a few GiB give millions of chunks), then
#   - prune --dry-run (the mark: every index file and chunk list read into
#     memory): peak RSS;
#   - the local chunk-index cache on disk (RocksDB): bytes;
#   - a re-backup of the same bytes (every chunk looked up, every one a
#     hit): chunks looked up per second.
# Prints a row per size and the per-chunk slope between the smallest and the
# largest, extrapolated to 10^9 chunks (docs/performance.md, "Prune").
#
# Usage: [SIZES_MIB="256 1024 2048"] benches/prune-memory.sh
# Needs GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
bench_password
setup_system
command -v /usr/bin/time >/dev/null || { echo "missing GNU time: apt-get install time" >&2; exit 1; }
build_cairn
work="$(mktemp -d "${TMPDIR:-/tmp}/cairn-prune-memory.XXXXXX")"
trap 'rm -rf "$work"' EXIT
sizes="${SIZES_MIB:-256 1024 2048}"
printf '| data (MiB) | chunks | prune mark peak RSS (MiB) | cache on disk (MiB) | re-backup lookups (chunks/s) |\n|---|---|---|---|---|\n'
rows=()
for mib in $sizes; do
  repo="$work/repo-$mib" cache="$work/cache-$mib" data="$work/data"
  head -c "$((mib << 20))" /dev/urandom > "$data"
  CAIRN_CACHE_DIR="$cache" "$cairn" --repo "$repo" init --avg-chunk-size 1KiB --compression-level 0 >/dev/null
  chunks=$(CAIRN_CACHE_DIR="$cache" "$cairn" --repo "$repo" --json backup "$data" | python3 -c 'import json,sys; print(json.load(sys.stdin)["chunks"])')
  rss=$(CAIRN_CACHE_DIR="$cache" /usr/bin/time -f %M "$cairn" --repo "$repo" -q prune --dry-run 2>&1 >/dev/null | tail -1)
  cache_bytes=$(du -sb "$cache" | cut -f1)
  start=$(date +%s.%N)
  CAIRN_CACHE_DIR="$cache" "$cairn" --repo "$repo" -q backup "$data" >/dev/null
  secs=$(python3 -c "import time; print(max($(date +%s.%N) - $start, 1e-9))")
  printf '| %s | %s | %.0f | %.1f | %.0f |\n' "$mib" "$chunks" "$(python3 -c "print($rss/1024)")" \
    "$(python3 -c "print($cache_bytes/1048576)")" "$(python3 -c "print($chunks/$secs)")"
  rows+=("$chunks $rss $cache_bytes")
  rm -f "$data"
done
python3 - "${rows[@]}" <<'PY'
import sys
rows = [tuple(map(float, r.split())) for r in sys.argv[1:]]
(c0, r0, k0), (c1, r1, k1) = rows[0], rows[-1]
if c1 > c0:
    rss = (r1 - r0) * 1024 / (c1 - c0)
    cache = (k1 - k0) / (c1 - c0)
    print(f"\nper chunk: prune mark {rss:.0f} B of memory, cache {cache:.0f} B on disk")
    print(f"at 10^9 chunks: prune mark ~{rss * 1e9 / 2**30:.0f} GiB of memory (target 2 GiB), "
          f"cache ~{cache * 1e9 / 2**30:.0f} GiB on disk")
PY
