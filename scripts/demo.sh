#!/usr/bin/env bash
# The main job on the embedded default (a local repository): back up the
# sample Qdrant snapshots twice, show how little the second backup added,
# restore, and verify every byte.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

build_cairn
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export CAIRN_REPOSITORY="$work/repo" CAIRN_CACHE_DIR="$work/cache"

series=../shared/fixtures/qdrant-churn
[ -d "$series" ] || series=tests/fixtures
day0=$(ls -d "$series"/day0 2>/dev/null || echo "$series")
day1=$(ls -d "$series"/day1 2>/dev/null || echo "$series")

echo "== cairn init ($CAIRN_REPOSITORY)"
"$cairn" init
echo "== backup 1: $day0"
"$cairn" backup "$day0"
echo "== backup 2: $day1 (the next night's snapshot)"
"$cairn" backup "$day1"
echo "== snapshots"
"$cairn" snapshots
echo "== stats"
"$cairn" stats
echo "== restore latest"
"$cairn" restore latest "$work/restored"
name=$(basename "$day1")
if diff -r "$day1" "$work/restored/$name" >/dev/null; then
  echo "== verified: the restore is byte-identical to $day1"
else
  echo "== restore differs from $day1" >&2
  exit 1
fi
