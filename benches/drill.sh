#!/usr/bin/env bash
# A restore drill against a restore into a real cluster, on the same backup:
# a 3-node Qdrant cluster (3 shards, replication factor 2) is loaded and
# backed up once; then, ROUNDS times each, interleaved:
#   restore: `cairn restore latest --to-qdrant` into a fresh 3-node cluster
#            (started and stopped outside the timing), verified as always;
#   drill:   `cairn drill --qdrant-bin` (starts its own scratch node, restores
#            into it, checks counts and asks the recorded probes, stops it:
#            all inside the timing).
# Prints the medians, their ratio (the target: drill < restore), the
# backup's size and the drill's peak RSS.
#
# Usage: [POINTS=n] [DIM=d] [ROUNDS=r] benches/drill.sh
#   Defaults: 100000 points of dimension 768 (~0.3 GiB of vectors);
#   POINTS=330000 makes a ~1 GiB backup.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
bench_password
setup_system
up=../shared/bin/qdrant-up.sh
bin=../shared/bin/qdrant
[ -x "$bin" ] || { echo "no Qdrant server at $bin" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is needed: apt-get install curl" >&2; exit 1; }
build_cairn
points=${POINTS:-100000} dim=${DIM:-768} rounds=${ROUNDS:-3}
work="$(mktemp -d "${TMPDIR:-/tmp}/cairn-drill.XXXXXX")"
trap 'bash "$up" --down "$work/src" >/dev/null 2>&1 || true; bash "$up" --down "$work/dst" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
urls=$(bash "$up" "$work/src" 3 37333)
first_url=${urls%%,*}
load() { python3 scripts/qdrant-load.py "$first_url" bench "$@" --dim "$dim"; }
echo "loading $points points of dimension $dim" >&2
step=50000
load 0 "$(( points < step ? points : step ))" 1 --create 3,2
for ((from = step; from < points; from += step)); do
  load "$from" "$(( from + step < points ? from + step : points ))" 1
done
wait_green "$first_url"
export CAIRN_REPOSITORY="$work/repo" CAIRN_CACHE_DIR="$work/cache"
"$cairn" -q init >/dev/null
"$cairn" -q --json backup --qdrant "$urls" > "$work/backup.json"
bash "$up" --down "$work/src" >/dev/null
size=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bytes"])' "$work/backup.json")

now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.${2:-3}f\", $1 }"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
: > "$work/r"
for r in $(seq "$rounds"); do
  echo "round $r/$rounds" >&2
  rm -rf "$work/dst"
  dst=$(bash "$up" "$work/dst" 3 38333)
  t0=$(now); "$cairn" -q restore latest --to-qdrant "$dst" >/dev/null
  echo "restore $(calc "$(now) - $t0")" >> "$work/r"
  bash "$up" --down "$work/dst" >/dev/null
  t0=$(now)
  python3 - "$work/rss" "$cairn" -q --json drill --qdrant-bin "$bin" --work-dir "$work" > "$work/drill.json" <<'PY'
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "a") as f:
    f.write(f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\n")
sys.exit(code)
PY
  echo "drill $(calc "$(now) - $t0")" >> "$work/r"
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["passed"], d' "$work/drill.json"
done
m() { grep "^$1 " "$work/r" | cut -d' ' -f2 | median; }
restore=$(m restore) drill=$(m drill)
probes=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(sum(len(c["probes"]) for c in d["collections"]))' "$work/drill.json")
echo
echo "| backup (shard snapshots) | restore into a fresh 3-node cluster | drill (scratch node, counts, $probes probes) | drill / restore | drill peak RSS |"
echo "|---|---|---|---|---|"
printf "| %s MiB | %.2f s | %.2f s | %s | %s MiB |\n" "$(calc "$size / 1048576" 1)" "$restore" "$drill" "$(calc "$drill / $restore" 2)" "$(calc "$(median < "$work/rss") / 1024" 0)"
echo
echo "medians of $rounds rounds; $points points, dimension $dim, 3 shards, replication factor 2; every timing: $(tr '\n' ' ' < "$work/r")"
