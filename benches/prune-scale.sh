#!/usr/bin/env bash
# Prune's mark at scale: for each chunk count, a synthetic repository
# (benches/synthetic_repo.rs: one index file per pack of 4,096 entries,
# sparse data packs, real chunk lists, one snapshot needing ~95 % of the
# chunks), then `prune --dry-run` (the whole mark: every index file and chunk
# list read, sorted and joined): peak RSS, time, and the bytes of sorted runs it
# wrote; then the local chunk-index cache built from that index (its size on
# disk and the time to build it) and its lookup rate, cold, for ids it holds
# and ids it does not (`synthetic-repo lookups`: 1 M random ids each, in a
# backup's batches of 2,048; then held ids with a restore's ordered walk).
#
# With BASELINE=/path/to/an/older/cairn the same dry run by that build, at
# counts up to BASELINE_MAX (default 4194304: it holds the index in memory).
#
# Usage: [CHUNKS="1048576 16777216 134217728"] [BASELINE=path] benches/prune-scale.sh
# Needs GNU time; takes ~80 bytes a chunk of disk (index files, lists,
# sorted runs), removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
bench_password
setup_system
command -v /usr/bin/time >/dev/null || { echo "missing GNU time: apt-get install time" >&2; exit 1; }
build_cairn
cargo build --release --quiet --example synthetic-repo
gen="$CARGO_TARGET_DIR/release/examples/synthetic-repo"
work="$(mktemp -d "${TMPDIR:-/tmp}/cairn-prune-scale.XXXXXX")"
trap 'rm -rf "$work"' EXIT
counts="${CHUNKS:-1048576 16777216 134217728}"
baseline_max="${BASELINE_MAX:-4194304}"

measure() { # tool-binary repo cache -> "rss_kib seconds scratch_bytes entries needed"
  local bin="$1" repo="$2" cache="$3" out="$work/out.json" err="$work/err"
  local start end
  start=$(date +%s.%N)
  CAIRN_CACHE_DIR="$cache" /usr/bin/time -f %M -o "$work/rss" "$bin" --repo "$repo" --json prune --dry-run > "$out" 2> "$err" \
    || { cat "$err" >&2; exit 1; }
  end=$(date +%s.%N)
  python3 - "$out" "$(cat "$work/rss")" "$start" "$end" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
m = s.get("mark", s)
print(sys.argv[2], float(sys.argv[4]) - float(sys.argv[3]), m.get("scratch_bytes", 0),
      m.get("index_entries", 0), m.get("chunks_needed", 0), m["packs_repacked"], m["packs_unused"])
PY
}

printf '| chunks | tool | mark peak RSS (MiB) | mark time (s) | scratch written (MiB) | index files (MiB) | packs to repack | cache on disk (MiB) | cache build (s) | cache lookups/s (held, absent, held, by the restore walk) |\n|---|---|---|---|---|---|---|---|---|---|\n'
for n in $counts; do
  repo="$work/repo-$n" cache="$work/cache-$n"
  CAIRN_CACHE_DIR="$cache" "$cairn" --repo "$repo" -q init --avg-chunk-size 4KiB >/dev/null
  "$gen" "$repo" "$n" >/dev/null
  index_mib=$(du -sm "$repo/index" | cut -f1)
  tools=(cairn)
  if [ -n "${BASELINE:-}" ] && [ "$n" -le "$baseline_max" ]; then tools+=(baseline); fi
  for tool in "${tools[@]}"; do
    bin="$cairn"; [ "$tool" = baseline ] && bin="$BASELINE"
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    read -r rss secs scratch entries needed repack unused < <(measure "$bin" "$repo" "$cache")
    cache_col="–" build_col="–" lookup_col="–"
    if [ "$tool" = cairn ]; then
      # The chunk-index cache, built from the same index files by the first
      # command that needs it (a dry-run backup of an empty file).
      : > "$work/empty"
      start=$(date +%s.%N)
      CAIRN_CACHE_DIR="$cache" "$cairn" --repo "$repo" -q backup --dry-run "$work/empty" >/dev/null
      build_col=$(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')")
      cache_col=$(du -sm "$cache" | cut -f1)
      # 1 M random ids it holds and 1 M it does not, in batches of 2,048,
      # then 1 M it holds with the ordered walk a restore uses.
      sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
      repo_cache=$(dirname "$(find "$cache" -maxdepth 2 -type d -name chunk-index | head -n1)")
      lookup_col=$("$gen" lookups "$repo_cache" "$n" 1048576 | awk '{printf "%s%.0f k", (NR > 1 ? ", " : ""), $2 / 1000}')
    fi
    printf '| %s | %s | %.0f | %.1f | %.0f | %s | %s | %s | %s | %s |\n' "$n" "$tool" \
      "$(python3 -c "print($rss/1024)")" "$secs" "$(python3 -c "print($scratch/1048576)")" \
      "$index_mib" "$repack" "$cache_col" "$build_col" "$lookup_col"
  done
  rm -rf "$repo" "$cache"
done
