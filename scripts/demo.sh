#!/usr/bin/env bash
# The main job on the embedded default (a local repository):
# 1. back up a live 3-node Qdrant cluster twice (a night of writes between),
#    restore it into a fresh single node and check every collection's points
#    count, then drill the backup (restored into a scratch Qdrant and queried
#    as recorded) (needs the Qdrant server at ../shared/bin/qdrant);
# 2. back up real Qdrant snapshot files twice, restore, verify every byte.
# The repository is encrypted with a password from a file the demo creates.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
setup_system

build_cairn
work="$(mktemp -d)"
up=../shared/bin/qdrant-up.sh
cleanup() {
  if [ -x "$up" ]; then bash "$up" --down "$work/src" >/dev/null 2>&1 || true; bash "$up" --down "$work/dst" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
export CAIRN_REPOSITORY="$work/repo" CAIRN_CACHE_DIR="$work/cache"
# The repository is encrypted (the default); its password is read from a
# file only this user can read (keep yours in a secret store and use
# --password-command to fetch it).
( umask 077; head -c 24 /dev/urandom | base64 > "$work/password" )
export CAIRN_PASSWORD_FILE="$work/password"

echo "== cairn init ($CAIRN_REPOSITORY, encrypted; password in $CAIRN_PASSWORD_FILE)"
"$cairn" init
"$cairn" key list

if [ -x ../shared/bin/qdrant ]; then
  echo "== starting a 3-node Qdrant cluster and a fresh single node (../shared/bin/qdrant)"
  src=$(bash "$up" "$work/src" 3 46333)
  dst=$(bash "$up" "$work/dst" 1 46433)
  node=${src%%,*}
  python3 scripts/qdrant-load.py "$node" docs 0 20000 1 --dim 64 --create 3,2
  python3 scripts/qdrant-load.py "$node" notes 0 3000 1 --dim 32 --create 2,1
  echo "== backup 1: cairn backup --qdrant $node   (the other nodes are discovered)"
  "$cairn" backup --qdrant "$node"
  echo "== a night of writes: 200 new points, 200 rewritten"
  python3 scripts/qdrant-load.py "$node" docs 20000 20200 2 --dim 64
  python3 scripts/qdrant-load.py "$node" docs 0 200 3 --dim 64
  echo "== backup 2"
  "$cairn" backup --qdrant "$node"
  echo "== snapshots"
  "$cairn" snapshots
  echo "== cairn restore latest --to-qdrant $dst   (a fresh single node)"
  "$cairn" restore latest --to-qdrant "$dst"
  for c in docs notes; do
    count() { curl -sf -X POST "$1/collections/$c/points/count" -H 'content-type: application/json' -d '{"exact":true}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["count"])'; }
    a=$(count "$node") b=$(count "$dst")
    [ "$a" = "$b" ] || { echo "== $c: $b points restored, the cluster has $a" >&2; exit 1; }
    echo "== verified: $c has $b points on the restored node, as on the cluster"
  done
  echo "== cairn drill --qdrant-bin ../shared/bin/qdrant   (restore into a scratch node, counts and recorded queries)"
  "$cairn" drill --qdrant-bin ../shared/bin/qdrant
else
  echo "== no Qdrant server at ../shared/bin/qdrant: skipping the cluster part"
fi

series=../shared/fixtures/qdrant-churn
[ -d "$series" ] || series=tests/fixtures
day0=$(ls -d "$series"/day0 2>/dev/null || echo "$series")
day1=$(ls -d "$series"/day1 2>/dev/null || echo "$series")
# A nightly job backs up the same directory each night.
nightly="$work/snapshots"
mkdir -p "$nightly"
echo "== snapshot files, night 1: $day0"
cp -r "$day0"/. "$nightly"
"$cairn" backup "$nightly"
echo "== snapshot files, night 2: $day1"
rm -rf "$nightly"; mkdir -p "$nightly"; cp -r "$day1"/. "$nightly"
"$cairn" backup "$nightly"
echo "== stats"
"$cairn" stats
echo "== restore latest (of this host's file backups)"
"$cairn" restore latest "$work/restored" --source "files@$(hostname 2>/dev/null || cat /proc/sys/kernel/hostname)"
if diff -r "$day1" "$work/restored/snapshots" >/dev/null; then
  echo "== verified: the restore is byte-identical to $day1"
else
  echo "== restore differs from $day1" >&2
  exit 1
fi
