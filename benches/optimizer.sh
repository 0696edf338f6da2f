#!/usr/bin/env bash
# Dedup across Qdrant optimizer rebuilds: backs up every night of one or more
# snapshot series (made by benches/qdrant-nights.py) with
#   cairn     this build, a new repository's defaults (vector data in chunks of whole records);
#   cairn-v1  this build, `init --vector-chunk-size 0`: every member chunked at the default
#             64 KiB average, as repositories of format version 1 do;
#   restic    the peer (its default chunker and compression);
#   baseline  (optional, BASELINE=/path/to/an/older/cairn) an older build, its own defaults;
# and prints per series: repository size after night 0, growth over nights
# 1..N, cairn's metadata share (index files, manifests and chunk lists) and
# chunk count, the time of the first backup (night 0), of nights 1..N
# together, of a re-backup of every night at once as new files (the same
# bytes, new inodes) and of a restore of the last night from a cold
# repository, and peak RSS. Growth is exact; times are
# medians of ROUNDS rounds (default 3), the tools interleaved in each round.
# Ends with the growth ratios against restic and the speed ratios against
# the baseline (cairn-v1 without one), each against its target (growth <=
# 0.4x restic; time <= 1.10x; metadata <= 3 %; peak RSS <= 300 MiB).
#
# Usage: [ROUNDS=n] [BASELINE=path] benches/optimizer.sh SERIES_DIR...
#   python3 benches/qdrant-nights.py /tmp/d768 --shape d768 && benches/optimizer.sh /tmp/d768
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
bench_password
setup_system
[ $# -gt 0 ] || { echo "usage: benches/optimizer.sh SERIES_DIR... (make one with benches/qdrant-nights.py)" >&2; exit 2; }
for t in restic /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "missing $t: apt-get install restic time" >&2; exit 1; }
done
build_cairn
rounds=${ROUNDS:-3}
tools=(cairn cairn-v1 restic)
[ -n "${BASELINE:-}" ] && tools+=(baseline)
work="$(mktemp -d "${TMPDIR:-/tmp}/cairn-optimizer.XXXXXX")"
trap 'rm -rf "$work"' EXIT
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR="$work/restic-cache" CAIRN_CACHE_DIR="$work/cairn-cache"
results="$work/results.tsv"
: >"$results"

record() { printf "%s\t%s\t%s\t%s\t%s\n" "$@" >>"$results"; }
# measure SERIES ROUND TOOL STEP CMD...: wall seconds and peak RSS (KiB) of CMD.
measure() {
  local s=$1 round=$2 tool=$3 step=$4; shift 4
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null 2>"$work/stderr" || { cat "$work/stderr" >&2; exit 1; }
  read -r secs rss <"$work/time"
  record "$s" "$round/$tool" "$step" time "$secs"
  record "$s" "$round/$tool" "$step" rss "$rss"
}
# backup_cmd TOOL REPO DIR: sets cmd to the command that backs DIR up.
backup_cmd() {
  case $1 in
    cairn|cairn-v1) cmd=("$cairn" -q --repo "$2" backup "$3") ;;
    baseline) cmd=("$BASELINE" -q --repo "$2" backup "$3") ;;
    restic) cmd=(restic -q -r "$2" backup "$3") ;;
  esac
}

for series in "$@"; do
  series="$(cd "$series" && pwd)"
  name=$(basename "$series")
  days=$(cd "$series" && ls -d day* | sort -V)
  last=$(echo "$days" | tail -n1)
  rm -rf "$work/fresh"; mkdir -p "$work/fresh"
  cp -r "$series"/day* "$work/fresh/"   # every night's bytes again, as new files
  for round in $(seq "$rounds"); do
    for tool in "${tools[@]}"; do
      echo "$name: round $round/$rounds: $tool" >&2
      repo="$work/repo"
      rm -rf "$repo" "$RESTIC_CACHE_DIR" "$CAIRN_CACHE_DIR"
      case $tool in
        cairn) "$cairn" --repo "$repo" init >/dev/null ;;
        cairn-v1) "$cairn" --repo "$repo" init --vector-chunk-size 0 >/dev/null ;;
        baseline) "$BASELINE" --repo "$repo" init >/dev/null ;;
        restic) restic -q -r "$repo" init --repository-version 2 >/dev/null ;;
      esac
      sync
      for d in $days; do
        cat "$series/$d"/* >/dev/null
        backup_cmd "$tool" "$repo" "$series/$d"
        measure "$name" "$round" "$tool" "$d" "${cmd[@]}"
        record "$name" "$round/$tool" "$d" size "$(du -sb "$repo" | cut -f1)"
      done
      # Restore of the last night from a cold repository (durable for cairn;
      # restic's restore leaves its data in the page cache).
      rm -rf "$work/restored"; mkdir -p "$work/restored"
      cold "$repo"
      case $tool in
        cairn|cairn-v1) measure "$name" "$round" "$tool" restore "$cairn" -q --repo "$repo" restore latest "$work/restored" ;;
        baseline) measure "$name" "$round" "$tool" restore "$BASELINE" -q --repo "$repo" restore latest "$work/restored" ;;
        restic) measure "$name" "$round" "$tool" restore restic -q -r "$repo" restore latest --target "$work/restored" ;;
      esac
      rm -rf "$work/restored"
      cat "$work/fresh"/day*/* >/dev/null
      backup_cmd "$tool" "$repo" "$work/fresh"
      measure "$name" "$round" "$tool" fresh "${cmd[@]}"
      if [ "$round" = 1 ] && { [ "$tool" = cairn ] || [ "$tool" = cairn-v1 ]; }; then
        "$cairn" --json --repo "$repo" stats >"$work/stats-$name-$tool.json"
      fi
    done
  done
  echo "$name" $days >>"$work/series"
done

python3 - "$work" "$rounds" "${tools[@]}" <<'PY'
import json, os, statistics, sys, collections
work, rounds, tools = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
rows = collections.defaultdict(list)
for line in open(os.path.join(work, "results.tsv")):
    s, rt, step, kind, val = line.rstrip("\n").split("\t")
    rnd, tool = rt.split("/", 1)
    rows[(s, tool, step, kind)].append(float(val))
mib = lambda b: b / 2**20
med = lambda s, t, step, kind: statistics.median(rows[(s, t, step, kind)])
verdicts = []
print(f"Times are medians of {rounds} rounds; sizes are exact (round 1).\n")
for line in open(os.path.join(work, "series")):
    name, *days = line.split()
    first, last = days[0], days[-1]
    size = lambda t, d: rows[(name, t, d, "size")][0]
    growth = {t: size(t, last) - size(t, first) for t in tools}
    print(f"### {name} ({len(days) - 1} nights)\n")
    print("| | " + " | ".join(tools) + " |")
    print("|---|" + "---|" * len(tools))
    print(f"| after {first} (MiB) | " + " | ".join(f"{mib(size(t, first)):.1f}" for t in tools) + " |")
    print(f"| growth {days[1]}..{last} (MiB) | " + " | ".join(f"{mib(growth[t]):.1f}" for t in tools) + " |")
    print("| growth / restic | " + " | ".join(f"{growth[t] / growth['restic']:.2f}x" for t in tools) + " |")
    for step, label in ((first, f"first backup ({first}) s"), ("fresh", f"re-backup of all {len(days)} nights as new files s"),
                        ("restore", f"restore of {last}, cold s")):
        print(f"| {label} | " + " | ".join(f"{med(name, t, step, 'time'):.2f}" for t in tools) + " |")
    nights = lambda t: statistics.median(sum(x) for x in zip(*(rows[(name, t, d, "time")] for d in days[1:])))
    print(f"| nights {days[1]}..{last}, total s | " + " | ".join(f"{nights(t):.2f}" for t in tools) + " |")
    peak = {t: max(max(rows[(name, t, d, 'rss')]) for d in days + ["fresh", "restore"]) for t in tools}
    print("| peak RSS (MiB) | " + " | ".join(f"{peak[t] / 1024:.0f}" for t in tools) + " |")
    for t in ("cairn", "cairn-v1"):
        st = json.load(open(os.path.join(work, f"stats-{name}-{t}.json")))
        print(f"\n{t}: {st['unique_chunks']} chunks, {mib(st['unique_bytes']):.1f} MiB unique; metadata "
              f"{mib(st['metadata_bytes']):.2f} MiB = {100 * st['metadata_bytes'] / st['total_bytes']:.2f} % of the repository "
              f"(index {mib(st['index_bytes']):.2f}, manifests {mib(st['snapshot_bytes']):.2f}, chunk lists {mib(st['chunk_list_bytes']):.2f}); "
              f"pack headers and trailers {100 * st['pack_overhead_bytes'] / st['total_bytes']:.2f} %; "
              f"{st['unique_chunks'] / (st['unique_bytes'] / 2**40):,.0f} chunks per TiB stored")
        if t == "cairn":
            meta = 100 * st["metadata_bytes"] / st["total_bytes"]
            verdicts.append((name, "metadata share", f"{meta:.2f} %", "<= 3 %", meta <= 3))
    print()
    r = growth["cairn"] / growth["restic"]
    verdicts.append((name, "growth vs restic", f"{r:.2f}x", "<= 0.40x", r <= 0.4))
    # Speed is held against the older build when there is one (today's
    # release on the same data), else against this build's version 1 chunking.
    ref = "baseline" if "baseline" in tools else "cairn-v1"
    for step, what in ((first, "first backup"), ("fresh", "re-backup"), ("restore", "restore")):
        q = med(name, "cairn", step, "time") / med(name, ref, step, "time")
        verdicts.append((name, f"{what} time vs {ref}", f"{q:.2f}x", "<= 1.10x", q <= 1.10))
    q = med(name, "restic", "restore", "time") / med(name, "cairn", "restore", "time")
    verdicts.append((name, "restore: restic's time / cairn's", f"{q:.2f}x", ">= 3x", q >= 3))
    q = nights("cairn") / nights(ref)
    verdicts.append((name, f"nights' backup time vs {ref}", f"{q:.2f}x", "(none)", True))
    verdicts.append((name, "peak RSS", f"{peak['cairn'] / 1024:.0f} MiB", "<= 300 MiB", peak["cairn"] <= 300 * 1024))
print("| series | measure | value | target | |")
print("|---|---|---|---|---|")
for name, what, val, target, ok in verdicts:
    verdict = "" if target == "(none)" else ("met" if ok else "GAP")
    print(f"| {name} | {what} | {val} | {target} | {verdict} |")
PY
