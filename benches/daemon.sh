#!/usr/bin/env bash
# The daemon on a repository of BACKUPS backups (default 10,000): its idle
# memory and CPU, the API's listing of every backup, and the dashboard's
# first paint in headless Chromium.
#
# The repository: one real cluster backup of a live Qdrant node (two
# collections, ../shared/bin/qdrant), copied into BACKUPS backups an hour
# apart by `synthetic-repo clone` (each its own manifest, as a repository
# that kept years of hourly backups). The daemon runs with one daily
# schedule on it and is measured:
#   idle      RSS after start, and CPU over IDLE seconds (default 30) idle
#   listing   GET /api/v1/backups of all BACKUPS: the first (the daemon
#             reads every manifest) and the median of RUNS more (default
#             11); one page (?limit=100) the same way; RSS after
#   dashboard first contentful paint and the backups table filled, from
#             navigation start, median of PAINTS page loads (default 5),
#             signed in, in headless Chromium (benches/dashboard_paint.rs)
# Each figure is printed with its target (issue: RSS <= 40 MiB, listing
# <= 100 ms) and the ratio to it.
#
#   bash benches/daemon.sh            BACKUPS=10000 IDLE=30 RUNS=11 PAINTS=5
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
bench_password
BACKUPS=${BACKUPS:-10000} IDLE=${IDLE:-30} RUNS=${RUNS:-11} PAINTS=${PAINTS:-5}
up=../shared/bin/qdrant-up.sh
[ -x ../shared/bin/qdrant ] || { echo "this benchmark needs the Qdrant server at ../shared/bin/qdrant" >&2; exit 1; }

build_cairn
cargo build --release --example synthetic-repo --example dashboard-paint
ex="$CARGO_TARGET_DIR/release/examples"
work="$(mktemp -d)"
daemon_pid=""
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
  bash "$up" --down "$work/q" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
export CAIRN_REPOSITORY="$work/repo" CAIRN_CACHE_DIR="$work/cache"

echo "== a repository of $BACKUPS backups"
node=$(bash "$up" "$work/q" 1 47333)
python3 scripts/qdrant-load.py "$node" docs 0 3000 1 --dim 64 --create 1,1 >/dev/null
python3 scripts/qdrant-load.py "$node" notes 0 1000 1 --dim 32 --create 1,1 >/dev/null
# Unencrypted: `synthetic-repo clone` rewrites manifests as stored (zstd
# JSON), which it cannot do to sealed ones. The daemon's listing reads the
# same manifests either way; opening each sealed one would add its AEAD.
"$cairn" -q init --no-encryption
"$cairn" -q backup --qdrant "$node" --tag schedule:daily
"$ex/synthetic-repo" clone "$CAIRN_REPOSITORY" "$BACKUPS"
bash "$up" --down "$work/q" >/dev/null

token=bench-token-$$
cat >"$work/cairn.toml" <<EOF
[repositories.main]
location = "$CAIRN_REPOSITORY"
cache_dir = "$CAIRN_CACHE_DIR"
[sources.qdrant]
qdrant = "$node"
[schedules.daily]
source = "qdrant"
cron = "@daily"
[schedules.daily.retention]
days = 7
EOF
"$cairn" config check "$work/cairn.toml" >/dev/null

port=47410
CAIRN_API_TOKEN=$token "$cairn" daemon --config "$work/cairn.toml" --listen "127.0.0.1:$port" \
  >"$work/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 1 100); do grep -q "listening on" "$work/daemon.log" && break; sleep 0.1; done
grep -q "listening on" "$work/daemon.log" || { cat "$work/daemon.log"; exit 1; }
url="http://127.0.0.1:$port"

rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$daemon_pid/status"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$daemon_pid/stat"; }
hz=$(getconf CLK_TCK)

sleep 2
rss0=$(rss_kib); t0=$(cpu_ticks)
sleep "$IDLE"
rss1=$(rss_kib); t1=$(cpu_ticks)
cpu_ms=$(( (t1 - t0) * 1000 / hz ))

get() { # prints seconds for one GET, checks the status
  curl -s -o "$work/body" -w '%{http_code} %{time_total}\n' -H "Authorization: Bearer $token" "$url$1" \
    | awk -v p="$1" '$1 != 200 { print "GET " p ": " $1 > "/dev/stderr"; exit 1 } { print $2 }'
}
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

first=$(get /api/v1/backups)
count=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$work/body")
[ "$count" = "$BACKUPS" ] || { echo "the API listed $count backups, not $BACKUPS" >&2; exit 1; }
body_bytes=$(stat -c %s "$work/body")
warm=$(for _ in $(seq 1 "$RUNS"); do get /api/v1/backups; done | median)
page=$(for _ in $(seq 1 "$RUNS"); do get '/api/v1/backups?limit=100'; done | median)
pcount=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$work/body")
[ "$pcount" = 100 ] || { echo "?limit=100 listed $pcount backups" >&2; exit 1; }
rss2=$(rss_kib)

paint=$("$ex/dashboard-paint" "$url" "$token" "$PAINTS" "$BACKUPS")
rss3=$(rss_kib)

ms() { awk -v s="$1" 'BEGIN { printf "%.1f", s * 1000 }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo
echo "daemon on $BACKUPS backups ($(nproc) cores; $(uname -r))"
printf '%-44s %12s %10s %8s\n' "measure" "value" "target" "ratio"
printf '%-44s %12s %10s %8s\n' "idle RSS after start (MiB)" "$(mib "$rss0")" "40" "$(ratio "$(mib "$rss0")" 40)"
printf '%-44s %12s %10s %8s\n' "idle RSS after ${IDLE} s (MiB)" "$(mib "$rss1")" "40" "$(ratio "$(mib "$rss1")" 40)"
printf '%-44s %12s %10s %8s\n' "idle CPU over ${IDLE} s (ms)" "$cpu_ms" "-" "-"
printf '%-44s %12s %10s %8s\n' "GET /backups, first: reads manifests (ms)" "$(ms "$first")" "-" "-"
printf '%-44s %12s %10s %8s\n' "GET /backups, all $BACKUPS, median (ms)" "$(ms "$warm")" "100" "$(ratio "$(ms "$warm")" 100)"
printf '%-44s %12s %10s %8s\n' "  its body (MiB)" "$(mib $((body_bytes / 1024)))" "-" "-"
printf '%-44s %12s %10s %8s\n' "GET /backups?limit=100, median (ms)" "$(ms "$page")" "-" "-"
printf '%-44s %12s %10s %8s\n' "RSS after the listings (MiB)" "$(mib "$rss2")" "40" "$(ratio "$(mib "$rss2")" 40)"
echo "$paint" | while IFS=$'\t' read -r what value; do
  printf '%-44s %12s %10s %8s\n' "$what" "$value" "-" "-"
done
printf '%-44s %12s %10s %8s\n' "RSS after the page loads (MiB)" "$(mib "$rss3")" "40" "$(ratio "$(mib "$rss3")" 40)"
