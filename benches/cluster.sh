#!/usr/bin/env bash
# Backs up a real Qdrant cluster twice (with a night of upserts between) and
# compares each backup's wall time with the floor: the same shard snapshot
# streams fetched from the same nodes with curl into /dev/null, as many at
# once as cairn reads (--parallel). Also prints the bytes each backup read
# and stored. Medians over ROUNDS rounds (default 3), cairn and curl
# interleaved; every first backup starts from an empty repository, every
# second from a copy of its round's first.
#
# Usage: [POINTS=n] [DIM=d] [ROUNDS=r] [PARALLEL=p] benches/cluster.sh
#   Defaults: 100000 points of dimension 128 in 3 shards, replication factor
#   2, on a 3-node cluster on loopback (../shared/bin/qdrant).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
bench_password
setup_system
up=../shared/bin/qdrant-up.sh
[ -x ../shared/bin/qdrant ] || { echo "no Qdrant server at ../shared/bin/qdrant" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is needed: apt-get install curl" >&2; exit 1; }
build_cairn
points=${POINTS:-100000} dim=${DIM:-128} rounds=${ROUNDS:-3} parallel=${PARALLEL:-3}
work="$(mktemp -d "${TMPDIR:-/tmp}/cairn-cluster.XXXXXX")"
trap 'bash "$up" --down "$work/q" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
urls=$(bash "$up" "$work/q" 3 36333)
first_url=${urls%%,*}
echo "cluster: $urls" >&2

# load N0 N1 SEED [--create S,RF]: upserts points N0..N1 into the bench collection.
load() { python3 scripts/qdrant-load.py "$first_url" bench "$@" --dim "$dim"; }
# One Active replica per shard and the node holding it, as "shard url" lines.
shard_sources() {
  for u in ${urls//,/ }; do
    curl -sf "$u/collections/bench/cluster" | python3 -c '
import json, sys
r = json.load(sys.stdin)["result"]
for s in r["local_shards"]:
    if s["state"] == "Active": print(s["shard_id"], sys.argv[1])' "$u"
  done | sort -n -k1,1 -u
}
# floor: fetch every shard stream into /dev/null, $parallel at once, from
# the sources listed (beforehand, untimed) in $work/sources.
floor() {
  xargs -P "$parallel" -n 2 sh -c 'curl -sf -o /dev/null "$1/collections/bench/shards/$0/snapshot"' < "$work/sources"
}
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.${2:-3}f\", $1 }"; }
secs() { local t0; t0=$(now); "$@" >/dev/null; calc "$(now) - $t0"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "loading $points points of dimension $dim" >&2
load 0 "$points" 1 --create 3,2
wait_green "$first_url"

export CAIRN_CACHE_DIR="$work/cache"
backup() { "$cairn" -q --json --repo "$1" backup --qdrant "$urls" --parallel "$parallel"; }
: > "$work/r"
for r in $(seq "$rounds"); do
  rm -rf "$work/repo$r" "$CAIRN_CACHE_DIR"; "$cairn" -q --repo "$work/repo$r" init >/dev/null
  echo "round $r/$rounds: night 1" >&2
  shard_sources > "$work/sources"
  echo "floor1 $(secs floor)" >> "$work/r"
  t0=$(now); backup "$work/repo$r" > "$work/b1-$r.json"
  echo "cairn1 $(calc "$(now) - $t0")" >> "$work/r"
done
new=$((points / 100))
echo "a night of writes: $new new points, $new rewritten" >&2
load "$points" $((points + new)) 2
load 0 "$new" 3
wait_green "$first_url"
for r in $(seq "$rounds"); do
  echo "round $r/$rounds: night 2" >&2
  rm -rf "$CAIRN_CACHE_DIR"; cp -r "$work/repo$r" "$work/repo$r-2"
  shard_sources > "$work/sources"
  echo "floor2 $(secs floor)" >> "$work/r"
  t0=$(now); backup "$work/repo$r-2" > "$work/b2-$r.json"
  echo "cairn2 $(calc "$(now) - $t0")" >> "$work/r"
done

field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
m() { grep "^$1 " "$work/r" | cut -d' ' -f2 | median; }
f1=$(m floor1) c1=$(m cairn1) f2=$(m floor2) c2=$(m cairn2)
read1=$(field "$work/b1-1.json" bytes) stored1=$(field "$work/b1-1.json" new_stored_bytes)
read2=$(field "$work/b2-1.json" bytes) stored2=$(field "$work/b2-1.json" new_stored_bytes)
mib() { calc "$1 / 1048576" 1; }
echo
echo "| night | shard streams read | curl > /dev/null (floor) | cairn backup | overhead over floor | stored by this backup |"
echo "|---|---|---|---|---|---|"
printf "| 1 (empty repository) | %s MiB | %.2f s | %.2f s | %sx | %s MiB |\n" "$(mib "$read1")" "$f1" "$c1" "$(calc "$c1 / $f1" 2)" "$(mib "$stored1")"
printf "| 2 (after 1%% new, 1%% rewritten) | %s MiB | %.2f s | %.2f s | %sx | %s MiB (%s%% of night 1) |\n" "$(mib "$read2")" "$f2" "$c2" "$(calc "$c2 / $f2" 2)" "$(mib "$stored2")" "$(calc "100 * $stored2 / $stored1" 1)"
echo
echo "medians of $rounds rounds; $points points, dimension $dim, 3 shards, replication factor 2, 3 nodes, --parallel $parallel"
echo "every round: $(grep -c . "$work/r") timings: $(tr '\n' ' ' < "$work/r")"
