#!/usr/bin/env bash
# Prune on a large repository, cairn against restic on the same data.
#
# Builds, with each tool, a repository of SERIES independent synthetic
# Qdrant-like series (benches/gen-series.py with different seeds, like
# separate collections), DAYS days each of about GIB, each day backed up
# COPIES times (separate snapshots: logical size ~ SERIES x DAYS x COPIES x
# GIB), then forgets every snapshot of the first series, which leaves about
# 1/SERIES of the stored data unreferenced (printed: cairn's dry run measures
# it). Then times
# `cairn prune` and `restic prune`, both with --max-unused 10%, ROUNDS times
# each on a fresh copy of the forgotten-but-unpruned repository, cold (the
# repository's pages dropped from the page cache). Prints medians of wall time
# and peak RSS, and the repository sizes before and after.
#
# MODE=days forgets instead the first half of the days of every series: packs
# are then partly needed, and both tools repack (the heavier prune).
#
# Usage: [MODE=series|days] [SERIES=3] [DAYS=6] [COPIES=3] [GIB=1.0] [ROUNDS=3] benches/prune.sh
# Needs restic (apt-get install restic), GNU time, and free disk for the
# inputs (SERIES x DAYS x GIB) and four repositories of about a third of that.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
bench_password
setup_system
for t in restic /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "missing $t: apt-get install restic time" >&2; exit 1; }
done
build_cairn
series=${SERIES:-3} days=${DAYS:-6} copies=${COPIES:-3} gib=${GIB:-1.0} rounds=${ROUNDS:-3} mode=${MODE:-series}
work="$(mktemp -d "${TMPDIR:-/tmp}/cairn-prune.XXXXXX")"
trap 'rm -rf "$work"' EXIT
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR="$work/restic-cache" CAIRN_CACHE_DIR="$work/cairn-cache"

for k in $(seq "$series"); do
  echo "generating series $k: $days days of ${gib} GiB" >&2
  python3 benches/gen-series.py "$work/series$k" --gib "$gib" --days "$days" --seed "$k" >/dev/null
done


"$cairn" -q --repo "$work/cairn" init >/dev/null
restic -q -r "$work/restic" init --repository-version 2 >/dev/null
for d in $(seq 0 $((days - 1))); do
  for k in $(seq "$series"); do
    for c in $(seq "$copies"); do
      echo "backup series $k, day $d, copy $c" >&2
      "$cairn" -q --repo "$work/cairn" backup --tag "series$k" --tag "day$d" "$work/series$k/day$d" >/dev/null
      restic -q -r "$work/restic" backup --tag "series$k" --tag "day$d" "$work/series$k/day$d" >/dev/null
    done
  done
done
logical=$("$cairn" --repo "$work/cairn" --json stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["logical_bytes"])')
# The snapshots to forget: series 1, or (MODE=days) the first half of the days.
if [ "$mode" = days ]; then
  doomed=$(seq -s' ' 0 $((days / 2 - 1)) | sed 's/[0-9]*/day&/g')
else
  doomed=series1
fi
pick='import json,sys; doomed=sys.argv[1].split(); [print(s["id"]) for s in json.load(sys.stdin) if set(s.get("tags") or []) & set(doomed)]'
"$cairn" -q --repo "$work/cairn" snapshots --json | python3 -c "$pick" "$doomed" \
  | xargs -r "$cairn" -q --repo "$work/cairn" forget >/dev/null
restic -q -r "$work/restic" snapshots --json | python3 -c "$pick" "$doomed" \
  | xargs -r restic -q -r "$work/restic" forget >/dev/null
frac=$("$cairn" --repo "$work/cairn" --json prune --dry-run --max-unused 10% \
  | python3 -c 'import json,sys; s=json.load(sys.stdin); print("%.3f" % (1 - s["live_bytes"] / s["pack_bytes"]))')
size() { du -sb "$1" | cut -f1; }
before_c=$(size "$work/cairn") before_r=$(size "$work/restic")
cp -a "$work/cairn" "$work/cairn.orig"; cp -a "$work/restic" "$work/restic.orig"

: > "$work/results"
measure() { # TOOL CMD...
  local tool=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  read -r secs rss < "$work/time"
  echo "$tool $secs $rss" >> "$work/results"
}
for r in $(seq "$rounds"); do
  for tool in cairn restic; do
    echo "round $r/$rounds: $tool prune" >&2
    rm -rf "$work/$tool" "$work/${tool}-cache"; cp -a "$work/$tool.orig" "$work/$tool"
    rm -rf "$CAIRN_CACHE_DIR" "$RESTIC_CACHE_DIR"
    cold "$work/$tool"
    case $tool in
      cairn) measure cairn "$cairn" -q --repo "$work/cairn" prune --max-unused 10% ;;
      restic) measure restic restic -q -r "$work/restic" prune --max-unused 10% ;;
    esac
  done
done
after_c=$(size "$work/cairn") after_r=$(size "$work/restic")
"$cairn" -q --repo "$work/cairn" check >/dev/null && echo "cairn check after prune: clean" >&2

med() { grep "^$1 " "$work/results" | cut -d' ' -f"$2" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
gib() { awk "BEGIN { printf \"%.2f\", $1 / 1073741824 }"; }
echo
echo "logical $(gib "$logical") GiB in $((series * days * copies)) snapshots; forgot: $doomed; unreferenced before prune: ${frac} of cairn's pack bytes"
echo
echo "| tool | prune (median of $rounds) | peak RSS (median) | repository before | after |"
echo "|---|---|---|---|---|"
printf "| cairn | %s s | %s MiB | %s GiB | %s GiB |\n" "$(med cairn 2)" "$(( $(med cairn 3) / 1024 ))" "$(gib "$before_c")" "$(gib "$after_c")"
printf "| restic 0.14 | %s s | %s MiB | %s GiB | %s GiB |\n" "$(med restic 2)" "$(( $(med restic 3) / 1024 ))" "$(gib "$before_r")" "$(gib "$after_r")"
echo
echo "every round: $(tr '\n' ';' < "$work/results")"
