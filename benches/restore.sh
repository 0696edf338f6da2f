#!/usr/bin/env bash
# Restore speed, from local disk and from an S3-protocol server, against
# restic restoring the same data from the same place.
#
# Backs up nights 0..NIGHTS-1 of a snapshot series (benches/qdrant-nights.py
# makes one) with
#   cairn     this build, a new repository's defaults (format version 2);
#   cairn-v1  this build, `init --vector-chunk-size 0` (format version 1);
#   restic    the peer (repository version 2, compression on);
#   baseline  (BASELINE=/path/to/an/older/cairn, optional) an older build;
# then restores the last night RESTORES times per tool and place, every
# restore from a cold start: repository pages dropped from the page cache
# (local) and no local cache at all (cairn's chunk index and restic's cache
# are rebuilt from the repository, as on a new machine after a disaster).
#
# Places:
#   local  a directory; cairn durable (files flushed before it exits) and
#          --no-sync (page cache, the peers' terms); restic as it is
#   s3     moto (S3 API) on the machine's loopback
#   s3-rtt moto behind benches/delay-proxy.py: RTT_MS round trip (default
#          20) on every request and one more per new connection, no
#          bandwidth cap (the machine's own loopback is not slowed; this
#          kernel has no netem, see the proxy's notes)
#   s3-cap the same, each direction capped at RATE (default 200mbit)
#   s3s, s3s-rtt  the same as s3 and s3-rtt with s3s-fs (a Rust S3 server
#          over a directory, `cargo install s3s-fs@0.14.1 --features
#          binary`) instead of moto: moto is single-threaded Python and
#          reads an object whole for every ranged GET, so on two cores its
#          own CPU bounds what any client can reach; s3s-fs serves ranges
#          from the file. Skipped with a note when s3s-fs is not installed.
#
# For the S3 places the server's CPU seconds during each restore are
# recorded too (from /proc), so the tables show what the server cost.
#
# Prints a Markdown table per place (median, min and max time, peak RSS,
# requests and bytes read by cairn, bytes read per request, over-read,
# throughput against the cap) and the verdicts against the targets:
#   local: version 2 <= 1.15x version 1, and >= 3x faster than restic;
#   s3, s3-rtt, s3s, s3s-rtt: >= 3x faster than restic; s3-cap: >= 70 % of the cap;
#   every place: >= 4 MiB per request, over-read <= 10 %.
#
# Usage: [NIGHTS=n] [RESTORES=n] [PLACES="local s3 s3-rtt s3-cap s3s s3s-rtt"] [RTT_MS=20] [RATE=200mbit]
#        [BASELINE=path] benches/restore.sh SERIES_DIR
#   python3 benches/qdrant-nights.py /tmp/d768 --shape d768 && benches/restore.sh /tmp/d768
# Needs restic, GNU time and python3 with moto (scripts/test.sh makes .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
bench_password
setup_system
[ $# -eq 1 ] || { echo "usage: benches/restore.sh SERIES_DIR (make one with benches/qdrant-nights.py)" >&2; exit 2; }
for t in restic /usr/bin/time curl; do
  command -v "$t" >/dev/null || { echo "missing $t: apt-get install restic time curl" >&2; exit 1; }
done
moto="${CAIRN_MOTO_SERVER:-$PWD/.venv/bin/moto_server}"
places=${PLACES:-local s3 s3-rtt s3-cap s3s s3s-rtt}
s3s=$(command -v s3s-fs || true)
if [[ " $places " == *" s3s"* ]] && [ -z "$s3s" ]; then
  echo "note: s3s-fs is not installed (cargo install s3s-fs@0.14.1 --features binary); skipping the s3s places" >&2
  places=$(echo " $places " | sed -e 's/ s3s-rtt / /g' -e 's/ s3s / /g')
fi
if [[ " $places " == *" s3 "* || " $places " == *" s3-"* ]] && [ ! -x "$moto" ]; then
  echo "moto is needed for the S3 places: bash scripts/test.sh sets up .venv (or set CAIRN_MOTO_SERVER)" >&2; exit 1
fi
build_cairn
series="$(cd "$1" && pwd)"
nights=${NIGHTS:-$(cd "$series" && ls -d day* | wc -l)}
days=$(cd "$series" && ls -d day* | sort -V | head -n "$nights")
last=$(echo "$days" | tail -n1)
restores=${RESTORES:-3}
rtt=${RTT_MS:-20}
rate=${RATE:-200mbit}
tools=(cairn cairn-v1 restic)
[ -n "${BASELINE:-}" ] && tools+=(baseline)
work="$(mktemp -d "${TMPDIR:-/tmp}/cairn-restore.XXXXXX")"
moto_pid=""
proxy_pid=""
stop_servers() {
  for p in $moto_pid $proxy_pid; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  moto_pid=""; proxy_pid=""
}
cleanup() {
  stop_servers
  rm -rf "$work"
}
trap cleanup EXIT
export RESTIC_PASSWORD=bench AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
results="$work/results.tsv"
: >"$results"
record() { printf "%s\t%s\t%s\t%s\n" "$@" >>"$results"; }

# free_port: a free loopback port.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_s3 SERVER [RTT_MS [RATE]]: a fresh S3 server (moto or s3s) on
# loopback, behind the delay proxy when RTT_MS is given; sets endpoint,
# server and moto_pid (whichever server it is).
start_s3() {
  stop_servers
  local port
  port=$(free_port)
  server=$1; shift
  if [ "$server" = s3s ]; then
    rm -rf "$work/s3s-root"; mkdir -p "$work/s3s-root"
    "$s3s" --host 127.0.0.1 --port "$port" --access-key "$AWS_ACCESS_KEY_ID" --secret-key "$AWS_SECRET_ACCESS_KEY" \
      "$work/s3s-root" >"$work/moto.log" 2>&1 &
  else
    "$moto" -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
  fi
  moto_pid=$!
  endpoint="http://127.0.0.1:$port"
  for _ in $(seq 100); do curl -s -o /dev/null "$endpoint" && break; sleep 0.1; done
  curl -s -o /dev/null "$endpoint" || { echo "$server did not start" >&2; cat "$work/moto.log" >&2; exit 1; }
  if [ -n "${1:-}" ]; then
    local pport cap=()
    pport=$(free_port)
    [ -n "${2:-}" ] && cap=(--rate "$2")
    python3 benches/delay-proxy.py "$pport" "127.0.0.1:$port" --rtt-ms "$1" "${cap[@]}" >"$work/proxy.out" 2>&1 &
    proxy_pid=$!
    for _ in $(seq 100); do grep -q ready "$work/proxy.out" 2>/dev/null && break; sleep 0.1; done
    endpoint="http://127.0.0.1:$pport"
  fi
}

# repo_for PLACE TOOL: sets repo (the location) and rrepo (restic's form).
repo_for() {
  case $1 in
    local) repo="$work/repo-$2"; rrepo="$repo" ;;
    *) if [ "$server" = s3s ]; then mkdir -p "$work/s3s-root/$2"; else curl -s -H "Expect:" -X PUT "$endpoint/$2" >/dev/null; fi
       repo="s3://$2/repo"; rrepo="s3:$endpoint/$2/repo" ;;
  esac
}

# server_ticks: CPU clock ticks the S3 server has used so far (0 locally).
server_ticks() {
  if [ -n "$moto_pid" ]; then awk '{print $14 + $15}' "/proc/$moto_pid/stat"; else echo 0; fi
}

# run_timed PLACE TOOL STEP CMD...: wall seconds, peak RSS and the server's
# CPU seconds; stdout kept in $work/out.
run_timed() {
  local place=$1 tool=$2 step=$3 before after; shift 3
  before=$(server_ticks)
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >"$work/out" 2>"$work/stderr" || { cat "$work/stderr" >&2; exit 1; }
  after=$(server_ticks)
  read -r secs rss <"$work/time"
  record "$place" "$tool/$step" time "$secs"
  record "$place" "$tool/$step" rss "$rss"
  [ -n "$moto_pid" ] && record "$place" "$tool/$step" server_cpu "$(python3 -c "print(($after - $before) / $(getconf CLK_TCK))")"
  return 0
}

backup_all() {
  local place=$1 tool=$2
  repo_for "$place" "$tool"
  export CAIRN_CACHE_DIR="$work/cache-$tool" RESTIC_CACHE_DIR="$work/rcache-$tool"
  case $tool in
    cairn) "$cairn" --repo "$repo" init >/dev/null ;;
    cairn-v1) "$cairn" --repo "$repo" init --vector-chunk-size 0 >/dev/null ;;
    baseline) "$BASELINE" --repo "$repo" init >/dev/null ;;
    restic) restic -q -r "$rrepo" init --repository-version 2 >/dev/null ;;
  esac
  for d in $days; do
    echo "$place: $tool: backup $d" >&2
    case $tool in
      cairn|cairn-v1) "$cairn" -q --repo "$repo" backup "$series/$d" >/dev/null ;;
      baseline) "$BASELINE" -q --repo "$repo" backup "$series/$d" >/dev/null ;;
      restic) restic -q -r "$rrepo" backup "$series/$d" >/dev/null ;;
    esac
  done
}

# restore_once PLACE TOOL STEP: one cold restore of the last night, checked.
restore_once() {
  local place=$1 tool=$2 step=$3 out="$work/restored"
  repo_for "$place" "$tool"
  rm -rf "$out" "$work/cold-cache" "$work/cold-rcache"; mkdir -p "$out"
  export CAIRN_CACHE_DIR="$work/cold-cache" RESTIC_CACHE_DIR="$work/cold-rcache"
  [ "$place" = local ] && cold "$repo"
  sync
  case $tool/$step in
    cairn/restore|cairn-v1/restore) run_timed "$place" "$tool" "$step" "$cairn" --json --repo "$repo" restore latest "$out" ;;
    cairn/nosync|cairn-v1/nosync) run_timed "$place" "$tool" "$step" "$cairn" --json --repo "$repo" restore --no-sync latest "$out" ;;
    baseline/restore) run_timed "$place" "$tool" "$step" "$BASELINE" -q --repo "$repo" restore latest "$out" ;;
    restic/restore) run_timed "$place" "$tool" "$step" restic -q -r "$rrepo" restore latest --target "$out" ;;
  esac
  if [ "${tool#cairn}" != "$tool" ]; then
    python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
for k in ("requests", "bytes_read", "over_read", "bytes"):
    print(f"{sys.argv[2]}\t{sys.argv[3]}/{sys.argv[4]}\t{k}\t{r.get(k, 0)}")' "$work/out" "$place" "$tool" "$step" >>"$results"
  fi
  local restored
  restored=$(find "$out" -type d -name "$last" | head -n1)
  diff -r "$series/$last" "$restored" >/dev/null || { echo "$place: $tool: restore differs from $last" >&2; exit 1; }
}

for place in $places; do
  case $place in
    local) stop_servers ;;
    s3) start_s3 moto ;;
    s3-rtt) start_s3 moto "$rtt" ;;
    s3-cap) start_s3 moto "$rtt" "$rate" ;;
    s3s) start_s3 s3s ;;
    s3s-rtt) start_s3 s3s "$rtt" ;;
    *) echo "unknown place $place" >&2; exit 2 ;;
  esac
  export AWS_ENDPOINT_URL="${endpoint:-}"
  for tool in "${tools[@]}"; do backup_all "$place" "$tool"; done
  for i in $(seq "$restores"); do
    for tool in "${tools[@]}"; do
      echo "$place: restore $i/$restores: $tool" >&2
      restore_once "$place" "$tool" restore
      case $tool in cairn|cairn-v1) [ "$place" = local ] && restore_once "$place" "$tool" nosync ;; esac
    done
  done
  rm -rf "$work"/repo-* "$work"/cache-* "$work"/rcache-*
done

python3 - "$results" "$series/$last" "$restores" "$rtt" "$rate" "$places" <<'PY'
import collections, os, re, statistics, sys
results, last, restores, rtt, rate, places = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6].split()
v = collections.defaultdict(list)
for line in open(results):
    place, key, kind, val = line.rstrip("\n").split("\t")
    v[(place, key, kind)].append(float(val))
size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(last) for f in fs)
mib = lambda b: b / 2**20
m = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)bit", rate)
cap = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)] / 8 if m else None
print(f"restore of {last} ({mib(size):.1f} MiB), {restores} cold restores per tool and place; medians (min–max)\n")
verdicts = []
def med(place, key, kind="time"):
    xs = v.get((place, key, kind))
    return statistics.median(xs) if xs else None
for place in places:
    label = {"local": "local disk", "s3": "moto S3 on loopback", "s3-rtt": f"moto S3 behind {rtt} ms RTT",
             "s3-cap": f"moto S3 behind {rtt} ms RTT and {rate}", "s3s": "s3s-fs on loopback",
             "s3s-rtt": f"s3s-fs behind {rtt} ms RTT"}[place]
    print(f"### {label}\n")
    print("| tool | restore (s) | peak RSS (MiB) | requests | read (MiB) | MiB/request | over-read | MiB/s | server CPU (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key in sorted({k for (p, k, kind) in v if p == place and kind == "time"}):
        xs = v[(place, key, "time")]
        t = statistics.median(xs)
        rss = max(v[(place, key, "rss")]) / 1024
        req = med(place, key, "requests")
        read = med(place, key, "bytes_read")
        over = med(place, key, "over_read")
        cols = [f"{t:.2f} ({min(xs):.2f}–{max(xs):.2f})", f"{rss:.0f}"]
        if req:
            cols += [f"{req:.0f}", f"{mib(read):.1f}", f"{mib(read) / req:.2f}", f"{100 * over / max(read - over, 1):.1f} %"]
        else:
            cols += ["–"] * 4
        cols.append(f"{mib(size) / t:.0f}")
        scpu = med(place, key, "server_cpu")
        cols.append("–" if scpu is None else f"{scpu:.2f}")
        print(f"| {key} | " + " | ".join(cols) + " |")
    print()
    c, c1, r = med(place, "cairn/restore"), med(place, "cairn-v1/restore"), med(place, "restic/restore")
    if c and r:
        verdicts.append((place, "cairn >= 3x faster than restic", f"{r / c:.2f}x", r / c >= 3))
    if place == "local" and c and c1:
        verdicts.append((place, "version 2 <= 1.15x version 1 (durable)", f"{c / c1:.2f}x", c / c1 <= 1.15))
        n, n1 = med(place, "cairn/nosync"), med(place, "cairn-v1/nosync")
        if n and n1 and r:
            verdicts.append((place, "--no-sync: version 2 vs version 1; vs restic", f"{n / n1:.2f}x; {r / n:.2f}x", None))
    req, read, over = med(place, "cairn/restore", "requests"), med(place, "cairn/restore", "bytes_read"), med(place, "cairn/restore", "over_read")
    if req:
        verdicts.append((place, ">= 4 MiB read per request", f"{mib(read) / req:.2f} MiB", mib(read) / req >= 4))
        verdicts.append((place, "over-read <= 10 %", f"{100 * over / max(read - over, 1):.1f} %", over <= 0.10 * (read - over)))
    if place == "s3-cap" and c and cap:
        share = (read or size) / c / cap
        verdicts.append((place, f">= 70 % of the {rate} cap", f"{100 * share:.0f} %", share >= 0.70))
print("| place | target | measured | met? |")
print("|---|---|---|---|")
for place, what, got, ok in verdicts:
    print(f"| {place} | {what} | {got} | {'yes' if ok else ('no' if ok is not None else '–')} |")
PY
