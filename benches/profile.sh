#!/usr/bin/env bash
# Profiles cairn's three timed steps on one snapshot file with perf: a first
# backup into an empty repository, a re-backup of the same bytes as a new
# file, and a restore. Writes, per step, the top symbols by CPU samples (text)
# and, where inferno is installed, a flamegraph (SVG) into OUT_DIR, plus
# wall/user/sys/RSS figures.
#
# Usage: benches/profile.sh SNAPSHOT_FILE [OUT_DIR]     (default OUT_DIR: ./profile)
#   e.g. python3 benches/gen-series.py /tmp/series --gib 1.0
#        benches/profile.sh /tmp/series/day5/collection.snapshot
# Needs perf (Debian package linux-perf); flamegraphs need inferno (cargo install inferno).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
bench_password
setup_system
input="$(realpath "${1:?usage: benches/profile.sh SNAPSHOT_FILE [OUT_DIR]}")"
out="$(mkdir -p "${2:-profile}" && realpath "${2:-profile}")"
for t in perf /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "missing $t: apt-get install linux-perf time" >&2; exit 1; }
done
flames=yes
command -v inferno-flamegraph >/dev/null || { flames=no; echo "no inferno: top symbols only (cargo install inferno for flamegraphs)" >&2; }
build_cairn
work="$(mktemp -d "${TMPDIR:-/tmp}/cairn-profile.XXXXXX")"
trap 'rm -rf "$work"' EXIT
export CAIRN_CACHE_DIR="$work/cache"
repo="$work/repo"
"$cairn" --repo "$repo" init >/dev/null
mkdir -p "$work/fresh" "$work/restore"
cp "$input" "$work/fresh/"
cat "$input" >/dev/null   # inputs in the page cache, as in compare.sh

# profile STEP CMD...: perf record (DWARF call graphs), then a flamegraph and
# the top 25 symbols; also the step's wall/user/sys seconds and peak RSS.
profile() {
  local step=$1; shift
  /usr/bin/time -f "$step: %e s wall, %U s user, %S s sys, %M KiB peak RSS" -a -o "$out/times.txt" \
    perf record -q -F 499 -g --call-graph dwarf,16384 -o "$work/$step.data" "$@" >/dev/null 2>"$work/stderr" \
    || { cat "$work/stderr" >&2; exit 1; }
  if [ "$flames" = yes ]; then
    perf script -i "$work/$step.data" 2>/dev/null | inferno-collapse-perf > "$work/$step.folded"
    inferno-flamegraph --title "cairn $step ($(basename "$input"))" < "$work/$step.folded" > "$out/$step.svg"
  fi
  perf report -i "$work/$step.data" --no-children --sort comm,dso,symbol -g none --stdio > "$work/$step.report" 2>/dev/null
  grep '%' "$work/$step.report" | sed 's/ *$//; s/  *- *- *$//' | sed -n 1,25p > "$out/$step-top.txt"
}
: > "$out/times.txt"
profile first-backup "$cairn" -q --repo "$repo" backup "$input"
profile re-backup "$cairn" -q --repo "$repo" backup "$work/fresh"
profile restore "$cairn" -q --repo "$repo" restore latest "$work/restore"
cmp "$input" "$work/restore/fresh/$(basename "$input")"
cat "$out/times.txt"
echo "flamegraphs and top symbols in $out"
