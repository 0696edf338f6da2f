#!/usr/bin/env bash
# What encryption costs: the same build, encrypted (the default) against
# --no-encryption, on the churn series of ../shared/fixtures (six nights of
# one collection's snapshots) and on 256 MiB of random data.
#
# Prints per mode the median of RUNS runs of: first backup (night 0), the
# re-backups of nights 1-5 (summed), a restore of the last night (page
# cache dropped first, --no-sync), the stored size and peak RSS; then the
# ratios encrypted / unencrypted (the target is at most 1.10). When restic
# is installed (Debian package restic) it runs the same steps (it always
# encrypts), and the last line is restic / cairn encrypted.
# The key is opened once per command (Argon2id, 64 MiB, 3 passes: about a
# quarter of a second); the second table shows it with --kdf-memory 8MiB
# --kdf-iterations 1 so that the ratio of the data path alone is visible.
#
#   bash benches/encryption.sh [RUNS=3]      (RANDOM_MIB=256: the random file's size)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
setup_system
build_cairn
runs="${1:-3}"
series=../shared/fixtures/qdrant-churn
[ -d "$series/day0" ] || { echo "needs $series (../shared beside the clone)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
head -c $((${RANDOM_MIB:-256} << 20)) /dev/urandom > "$work/random.bin"
export CAIRN_PASSWORD="cairn bench password" RESTIC_PASSWORD="cairn bench password"
modes=(plain sealed)
if command -v restic >/dev/null; then modes+=(restic); else echo "restic not installed: no restic rows (apt-get install restic)" >&2; fi

calc() { awk "BEGIN { print $* }"; }
# timed CMD...: runs it and prints its wall time in seconds (measured
# around the child alone), appending its peak RSS in KiB to $work/rss
# (getrusage, through python3: no GNU time needed).
timed() {
  python3 - "$work/rss" "$@" <<'PY'
import resource, subprocess, sys, time
t = time.monotonic()
code = subprocess.call(sys.argv[2:], stdout=subprocess.DEVNULL)
print(f"{time.monotonic() - t:.4f}")
with open(sys.argv[1], "a") as f:
    f.write(f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\n")
sys.exit(code)
PY
}

one_run() { # MODE KDF... -> prints "first rebackup restore bytes"
  local mode="$1"; shift
  local repo="$work/repo-$mode" cache="$work/cache-$mode"
  rm -rf "$repo" "$cache" "$work/out"
  export CAIRN_REPOSITORY="$repo" CAIRN_CACHE_DIR="$cache" RESTIC_REPOSITORY="$repo" RESTIC_CACHE_DIR="$cache"
  local tool=("$cairn" -q backup) restore_cmd=("$cairn" -q restore --no-sync latest "$work/out")
  case "$mode" in
    plain) "$cairn" -q init --no-encryption >/dev/null ;;
    sealed) "$cairn" -q init "$@" >/dev/null ;;
    restic)
      restic -q init --repository-version 2 >/dev/null
      tool=(restic -q backup)
      restore_cmd=(restic -q restore latest --target "$work/out") ;;
  esac
  local first rest=0 restore t
  first=$(timed "${tool[@]}" "$series/day0" "$work/random.bin")
  for d in 1 2 3 4 5; do
    t=$(timed "${tool[@]}" "$series/day$d" "$work/random.bin")
    rest=$(calc "$rest + $t")
  done
  cold "$repo"
  restore=$(timed "${restore_cmd[@]}")
  echo "$first $rest $restore $(du -sb "$repo" | cut -f1)"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

table() { # LABEL KDF...
  local label="$1"; shift
  declare -A col
  local ms=("${modes[@]}")
  [ $# -eq 0 ] || ms=(plain sealed) # restic once, against the default key
  for mode in "${ms[@]}"; do
    : > "$work/rows-$mode"; : > "$work/rss"
    for _ in $(seq "$runs"); do one_run "$mode" "$@" >> "$work/rows-$mode"; done
    for i in 1 2 3 4; do col[$mode,$i]=$(cut -d' ' -f$i "$work/rows-$mode" | median); done
    col[$mode,rss]=$(median < "$work/rss")
  done
  echo "== $label ($runs runs, medians)"
  printf '%-10s %12s %14s %12s %14s %14s\n' mode "first (s)" "re-backups (s)" "restore (s)" "stored (MiB)" "peak RSS (MiB)"
  for mode in "${ms[@]}"; do
    printf '%-10s %12.2f %14.2f %12.2f %14.1f %14.1f\n' "$mode" "${col[$mode,1]}" "${col[$mode,2]}" "${col[$mode,3]}" \
      "$(calc "${col[$mode,4]} / 1048576")" "$(calc "${col[$mode,rss]} / 1024")"
  done
  printf '%-10s %12.3f %14.3f %12.3f %14.3f %14.3f\n' "sealed/plain" \
    "$(calc "${col[sealed,1]} / ${col[plain,1]}")" "$(calc "${col[sealed,2]} / ${col[plain,2]}")" \
    "$(calc "${col[sealed,3]} / ${col[plain,3]}")" "$(calc "${col[sealed,4]} / ${col[plain,4]}")" \
    "$(calc "${col[sealed,rss]} / ${col[plain,rss]}")"
  if [ -n "${col[restic,1]:-}" ]; then
    printf '%-10s %12.3f %14.3f %12.3f %14.3f %14.3f\n' "restic/sealed" \
      "$(calc "${col[restic,1]} / ${col[sealed,1]}")" "$(calc "${col[restic,2]} / ${col[sealed,2]}")" \
      "$(calc "${col[restic,3]} / ${col[sealed,3]}")" "$(calc "${col[restic,4]} / ${col[sealed,4]}")" \
      "$(calc "${col[restic,rss]} / ${col[sealed,rss]}")"
  fi
}

table "default key (Argon2id 64 MiB, 3 passes)"
table "cheap key (8 MiB, 1 pass): the data path" --kdf-memory 8MiB --kdf-iterations 1
