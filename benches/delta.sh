#!/usr/bin/env bash
# Delta pulls against full streams, night by night, on a live 3-node Qdrant
# cluster driven by benches/qdrant-nights.py (real Qdrant, the optimizer
# running). After each night, once the collection is green, the same cluster
# is backed up twice into two repositories, the order alternating by night:
#   full:  `cairn backup --qdrant` (every shard streamed whole);
#   delta: `cairn backup --qdrant --delta` (Qdrant's partial snapshots; night
#          0 starts the chains, each later night reads what changed).
# Per night and way: bytes read from the nodes (the shard records' sizes),
# backup time, peak RSS, what the night added to the repository (growth) and
# the methods the shards were read with; the kind of night (first, quiet,
# rebuild: the optimizer dropped segments); delta ÷ full. Then the last night
# is restored from each repository (to files, --no-sync) and timed, and the
# delta repository is checked in full (`check --read-data`).
#
# Usage: [SHAPE=d768-cluster-quiet] [NIGHTS=4] [SEED=1] [POINTS=n] benches/delta.sh
#   SHAPE: a cluster shape of `benches/qdrant-nights.py --list`
#   (d768-cluster-quiet: 1 % new points a night; d768-cluster-quiet-rewrites:
#   1 % new, rewritten and deleted; d768-cluster: 7 % churn); POINTS: the
#   initial points instead of the shape's (30,000 of dimension 768: 94 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
bench_password
setup_system
[ -x ../shared/bin/qdrant ] || { echo "no Qdrant server at ../shared/bin/qdrant" >&2; exit 1; }
command -v /usr/bin/time >/dev/null || { echo "GNU time is needed: apt-get install time" >&2; exit 1; }
build_cairn
shape=${SHAPE:-d768-cluster-quiet} nights=${NIGHTS:-4} seed=${SEED:-1}
points=${POINTS:+--points $POINTS}
work="$(mktemp -d "${TMPDIR:-/tmp}/cairn-delta.XXXXXX")"
trap 'rm -rf "$work"' EXIT
export CAIRN_CACHE_DIR="$work/cache"
"$cairn" -q --repo "$work/full" init >/dev/null
"$cairn" -q --repo "$work/delta" init >/dev/null

cat > "$work/night.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
one() { # way, extra args
  /usr/bin/time -f "%e %M" -o "$work/\$1-\$NIGHT.time" \
    "$cairn" -q --json --repo "$work/\$1" backup --qdrant "\$QDRANT_URLS" "\${@:2}" > "$work/\$1-\$NIGHT.json"
}
echo "\$DROPPED" > "$work/dropped-\$NIGHT"
if [ \$((NIGHT % 2)) -eq 0 ]; then one full; one delta --delta; else one delta --delta; one full; fi
EOF
chmod +x "$work/night.sh"
python3 benches/qdrant-nights.py "$work/series" --shape "$shape" --nights "$nights" --seed "$seed" \
  --no-files --each-night "$work/night.sh" $points

restore() { # way
  rm -rf "$work/out-$1"
  /usr/bin/time -f "%e %M" -o "$work/restore-$1.time" \
    "$cairn" -q --repo "$work/$1" restore latest "$work/out-$1" --no-sync >/dev/null
}
restore full
restore delta
"$cairn" -q --repo "$work/delta" check --read-data >/dev/null

python3 - "$work" "$nights" "$shape" <<'PY'
import json, sys
work, nights, shape = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def load(way, n):
    b = json.load(open(f"{work}/{way}-{n}.json"))
    secs, rss = open(f"{work}/{way}-{n}.time").read().split()
    shards = [s for c in b["collections"] for s in c["shards"]]
    return {"read": sum(s["size"] for s in shards), "secs": float(secs), "rss": int(rss) / 1024,
            "growth": b["new_stored_bytes"], "methods": sorted({s["method"] for s in shards})}
mib = lambda x: x / 2**20
print(f"\n### {shape}, {nights} nights after the first (node reads, time, peak RSS, growth)\n")
print("| night | kind | full: read MiB | full: s | delta: read MiB | delta: s | read ÷ full | time ÷ full "
      "| growth MiB (full, delta) | peak RSS MiB (full, delta) | delta methods |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for n in range(nights + 1):
    f, d = load("full", n), load("delta", n)
    dropped = int(open(f"{work}/dropped-{n}").read())
    kind = "first" if n == 0 else (f"rebuild ({dropped} segments dropped)" if dropped else "no rebuild")
    print(f"| {n} | {kind} | {mib(f['read']):.1f} | {f['secs']:.2f} | {mib(d['read']):.1f} | {d['secs']:.2f} "
          f"| {d['read'] / max(f['read'], 1):.3f} | {d['secs'] / max(f['secs'], 1e-9):.2f} "
          f"| {mib(f['growth']):.1f}, {mib(d['growth']):.1f} | {f['rss']:.0f}, {d['rss']:.0f} "
          f"| {', '.join(d['methods'])} |")
r = {w: open(f"{work}/restore-{w}.time").read().split() for w in ("full", "delta")}
print(f"\nrestore of night {nights} to files (--no-sync): full {float(r['full'][0]):.2f} s "
      f"({int(r['full'][1]) / 1024:.0f} MiB peak), delta {float(r['delta'][0]):.2f} s "
      f"({int(r['delta'][1]) / 1024:.0f} MiB peak); `check --read-data` of the delta repository passed")
PY
