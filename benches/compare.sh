#!/usr/bin/env bash
# Backs up a snapshot series day by day with cairn, restic and borg, each into
# a local repository; then backs up the last day again as a fresh copy (same
# bytes, new file) and restores it. Prints per-step wall time, peak RSS,
# repository size after each day, and cairn/peer ratios, as a Markdown table.
# Restores are timed twice: until the tool exits, and until the restored data
# is on disk (the tool, then sync); cairn's restore also runs once more with
# --no-sync, which leaves the data in the page cache as restic and borg do.
#
# The whole sequence runs ROUNDS times (default 3), the tools interleaved
# within each round, each tool starting from a fresh repository, a flushed
# page cache write-back (sync) and its inputs read into the page cache.
# Restores start from a cold repository (its pages dropped from the page
# cache). Times are the median over rounds; sizes and peak RSS the median and
# the maximum.
#
# With BASELINE=/path/to/an/older/cairn (the previous release built from
# git), that build runs the same sequence and every row also shows it and
# its time against this build's.
#
# Usage: [ROUNDS=n] [BASELINE=path] benches/compare.sh [SERIES_DIR]     (default ../shared/fixtures/qdrant-churn)
#   SERIES_DIR holds day0/, day1/, ... each with one or more snapshot files.
#   A multi-GB series: python3 benches/gen-series.py /tmp/series --gib 2 && benches/compare.sh /tmp/series
# Needs restic and borg (Debian packages restic, borgbackup) and GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
bench_password
setup_system
series="$(cd "${1:-../shared/fixtures/qdrant-churn}" && pwd)"
for t in restic borg /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "missing $t: apt-get install restic borgbackup time" >&2; exit 1; }
done
build_cairn
work="$(mktemp -d "${TMPDIR:-/tmp}/cairn-compare.XXXXXX")"
trap 'rm -rf "$work"' EXIT
days=$(cd "$series" && ls -d day* | sort -V)
last=$(echo "$days" | tail -n1)
export RESTIC_PASSWORD=bench BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export BORG_BASE_DIR="$work/borg-home" RESTIC_CACHE_DIR="$work/restic-cache" CAIRN_CACHE_DIR="$work/cairn-cache"
results="$work/results.tsv"
: > "$results"

# measure ROUND TOOL STEP CMD...: runs CMD, records wall seconds and peak RSS (KiB).
measure() {
  local round=$1 tool=$2 step=$3; shift 3
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null 2>"$work/stderr" || { cat "$work/stderr" >&2; exit 1; }
  read -r secs rss < "$work/time"
  printf "%s\t%s\t%s\ttime\t%s\n%s\t%s\t%s\trss\t%s\n" "$round" "$tool" "$step" "$secs" "$round" "$tool" "$step" "$rss" >> "$results"
}
size() { printf "%s\t%s\t%s\tsize\t%s\n" "$1" "$2" "$3" "$(du -sb "$4" | cut -f1)" >> "$results"; }

mkdir -p "$work/fresh"
cp -r "$series/$last" "$work/fresh/$last"   # same bytes, new files (new inodes and mtimes)

# check_restore TOOL DIR: the restored last day equals the original.
check_restore() {
  local restored
  restored=$(find "$2" -type d -name "$last" | head -n1)
  diff -r "$series/$last" "$restored" >/dev/null || { echo "$1: restore differs from $last" >&2; exit 1; }
}

rounds=${ROUNDS:-3}
# sequence ROUND TOOL: one tool's whole run, recorded under ROUND.
sequence() {
  local round=$1 tool=$2 repo="$work/repo-$2" out="$work/restore-$2" bin="$cairn"
  [ "$tool" = baseline ] && bin="$BASELINE"
  rm -rf "$repo" "$out" "$BORG_BASE_DIR" "$RESTIC_CACHE_DIR" "$CAIRN_CACHE_DIR"
  sync
  cat "$series"/day*/* "$work/fresh/$last"/* >/dev/null
  case $tool in
    cairn|baseline) "$bin" --repo "$repo" init >/dev/null ;;
    restic) restic -q -r "$repo" init --repository-version 2 >/dev/null ;;
    borg) borg init -e none "$repo" ;;
  esac
  for d in $days; do
    case $tool in
      cairn|baseline) measure "$round" "$tool" "$d" "$bin" -q --repo "$repo" backup "$series/$d" ;;
      restic) measure "$round" restic "$d" restic -q -r "$repo" backup "$series/$d" ;;
      borg) (cd "$series" && measure "$round" borg "$d" borg create "$repo::$d" "$d") ;;
    esac
    size "$round" "$tool" "$d" "$repo"
  done
  case $tool in
    cairn|baseline) measure "$round" "$tool" fresh "$bin" -q --repo "$repo" backup "$work/fresh/$last" ;;
    restic) measure "$round" restic fresh restic -q -r "$repo" backup "$work/fresh/$last" ;;
    borg) (cd "$work/fresh" && measure "$round" borg fresh borg create "$repo::fresh" "$last") ;;
  esac
  # Restores read a cold repository, as they do after any real interval (and
  # as cairn's own backups leave it: its large writes bypass the page cache).
  cold "$repo"
  mkdir -p "$out"
  case $tool in
    cairn|baseline) measure "$round" "$tool" restore "$bin" -q --repo "$repo" restore latest "$out" ;;
    restic) measure "$round" restic restore restic -q -r "$repo" restore latest --target "$out" ;;
    borg) (cd "$out" && measure "$round" borg restore borg extract "$repo::fresh") ;;
  esac
  # Cairn flushes restored files to disk before it exits; restic and borg
  # leave them in the page cache. The sync that follows measures what is
  # still to write, so restore + sync is the time until the data is durable.
  measure "$round" "$tool" sync sync
  check_restore "$tool" "$out"
  if [ "$tool" = cairn ] || [ "$tool" = baseline ]; then
    # The same restore on restic's and borg's terms: through the page cache, no flush.
    rm -rf "$out"; mkdir -p "$out"; cold "$repo"
    measure "$round" "$tool" nosync "$bin" -q --repo "$repo" restore --no-sync latest "$out"
    check_restore "$tool" "$out"
  fi
  rm -rf "$out" "$repo"
}
tools=(cairn restic borg)
[ -n "${BASELINE:-}" ] && tools+=(baseline)
for round in $(seq "$rounds"); do
  for tool in "${tools[@]}"; do
    echo "round $round/$rounds: $tool" >&2
    sequence "$round" "$tool"
  done
done

python3 - "$results" "$series" "$rounds" $days <<'PY'
import sys, collections, os, statistics
results, series, rounds, days = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
samples = collections.defaultdict(lambda: collections.defaultdict(list))
for line in open(results):
    _round, tool, step, kind, val = line.rstrip("\n").split("\t")
    samples[(step, kind)][tool].append(float(val))
# Medians over rounds; peak RSS is the maximum of every run.
v = {key: {tool: (max if key[1] == "rss" else statistics.median)(vals) for tool, vals in per_tool.items()}
     for key, per_tool in samples.items()}
mib = lambda b: b / 2**20
day_bytes = {d: sum(os.path.getsize(os.path.join(series, d, f)) for f in os.listdir(os.path.join(series, d))) for d in days}
print(f"series: {series} ({len(days)} days, last day {mib(day_bytes[days[-1]]):.1f} MiB); "
      f"times are medians of {rounds} rounds\n")
base = any(k[1] == "time" and "baseline" in t for k, t in samples.items())
print("| step | cairn | restic | borg | restic/cairn | borg/cairn |" + (" baseline | cairn/baseline |" if base else ""))
print("|---|---|---|---|---|---|" + ("---|---|" if base else ""))
def row(name, c, r, b, fmt, key=None):
    ratio = lambda p: f"{p / c:.2f}x" if c else "-"
    extra = ""
    if base:
        x = v.get(key, {}).get("baseline") if key else None
        extra = f" {fmt(x)} | {c / x:.2f}x |" if x else " - | - |"
    print(f"| {name} | {fmt(c)} | {fmt(r)} | {fmt(b)} | {ratio(r)} | {ratio(b)} |" + extra)
# Restore until its data is on disk: each round's restore plus the sync after it.
samples[("durable", "time")] = {tool: [r + s for r, s in zip(samples[("restore", "time")][tool], samples[("sync", "time")][tool])]
                                for tool in samples[("restore", "time")]}
v[("durable", "time")] = {tool: statistics.median(vals) for tool, vals in samples[("durable", "time")].items()}
steps = days + ["fresh", "restore", "durable"]
for d in steps:
    t = v[(d, "time")]
    label = {"fresh": f"re-backup {days[-1]} as a new file", "restore": f"restore {days[-1]}",
             "durable": f"restore {days[-1]} + sync (until on disk)"}.get(d, f"backup {d}")
    row(label + " (s)", t["cairn"], t["restic"], t["borg"], lambda x: f"{x:.2f}", (d, "time"))
    if d == "restore":
        n = v[("nosync", "time")]["cairn"]
        row(f"restore {days[-1]}, cairn --no-sync (s)", n, t["restic"], t["borg"], lambda x: f"{x:.2f}", ("nosync", "time"))
for d in days:
    s = v[(d, "size")]
    row(f"repo size after {d} (MiB)", s["cairn"], s["restic"], s["borg"], lambda x: f"{mib(x):.1f}", (d, "size"))
every = ("cairn", "restic", "borg") + (("baseline",) if base else ())
g = {t: v[(days[-1], "size")][t] - v[(days[0], "size")][t] for t in every}
v[("growth", "size")] = g
row(f"growth {days[0]}..{days[-1]} (MiB)", g["cairn"], g["restic"], g["borg"], lambda x: f"{mib(x):.1f}", ("growth", "size"))
rss = {t: max(v[(s, "rss")][t] for s in days + ["fresh", "restore"]) for t in every}
for t in ("cairn", "baseline"):
    if t in rss:
        rss[t] = max(rss[t], v[("nosync", "rss")][t])
v[("peak", "rss")] = rss
row("peak RSS (MiB)", rss["cairn"], rss["restic"], rss["borg"], lambda x: f"{x / 1024:.0f}", ("peak", "rss"))
print(f"\nEvery round's times (s), cairn / restic / borg:\n")
for d in steps:
    t = samples[(d, "time")]
    print(f"- {d}: " + " / ".join(" ".join(f"{x:.2f}" for x in t[tool]) for tool in ("cairn", "restic", "borg")))
print("- restore, cairn --no-sync: " + " ".join(f"{x:.2f}" for x in samples[("nosync", "time")]["cairn"]))
fresh = day_bytes[days[-1]] / 2**30 / v[("fresh", "time")]["cairn"]
growth = g['cairn'] / g['restic']
print(f"\ncairn re-backup of unchanged bytes: {fresh:.2f} GiB/s; "
      f"storage growth vs restic: {growth:.2f}x, vs borg: {g['cairn'] / g['borg']:.2f}x")
# The storage target: growth over nights 1..N at most 0.4x restic's on the
# series of benches/qdrant-nights.py (0.5x on the collection shape d768).
print(f"growth target (<= 0.40x restic): {'met' if growth <= 0.4 else 'GAP'}")
PY
