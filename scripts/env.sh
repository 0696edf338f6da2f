# Shared setup for the project's scripts: system packages (installed when
# run as root, otherwise the command to run is printed), the cargo target
# dir (kept outside the clone so RocksDB is built once per machine), and
# build_cairn.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cairn-target}"

# wait_green URL [COLLECTION=bench]: waits (at most 10 minutes) until the
# collection's status is green (the optimizer done).
wait_green() {
  local s
  for _ in $(seq 1 1200); do
    s=$(curl -sf "$1/collections/${2:-bench}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["status"])')
    [ "$s" = green ] && return 0; sleep 0.5
  done
  echo "collection ${2:-bench} did not become green" >&2; exit 1
}

# bench_password: the benches' repositories are encrypted, as new ones are
# by default; releases before encryption ignore the variable.
bench_password() {
  export CAIRN_PASSWORD="${CAIRN_PASSWORD:-cairn bench password}"
}

# setup_system [python]: RocksDB's bindings need a C++ compiler and libclang;
# with "python" (the tests), the S3 server (moto) needs python3 with venv and
# the HTML report test a real browser (Chromium), the Azure tests Node's npm
# (to install Azurite).
# Idempotent: installs only what is missing.
setup_system() {
  local need=()
  if ! ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 && [ -z "${LIBCLANG_PATH:-}" ]; then
    need+=(clang libclang-dev)
  fi
  command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 || command -v clang++ >/dev/null 2>&1 || need+=(g++)
  if [ "${1:-}" = python ]; then
    command -v python3 >/dev/null 2>&1 || need+=(python3)
    python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
    command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
    command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need+=(chromium)
  fi
  command -v curl >/dev/null 2>&1 || need+=(curl)
  if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "== installing ${need[*]}"
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
    else
      echo "missing system packages; run: sudo apt-get install ${need[*]}" >&2
      exit 1
    fi
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is not installed: install Rust (https://rustup.rs) first" >&2
    exit 1
  fi
}

# cold DIR: flushes dirty pages, then drops DIR's files from the page cache
# (benchmarks that read a repository as it is after any real interval).
cold() {
  sync
  python3 -c 'import os, sys
for d, _, fs in os.walk(sys.argv[1]):
    for f in fs:
        fd = os.open(os.path.join(d, f), os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)' "$1"
}

# Builds the release binary and sets $cairn to its path.
# Cargo's own progress is shown: the first build on a machine compiles
# RocksDB from source (15-25 minutes on two cores) and should not look hung.
build_cairn() {
  if [ ! -x "$CARGO_TARGET_DIR/release/cairn" ]; then
    echo "== building cairn into $CARGO_TARGET_DIR (the first build compiles RocksDB: 15-25 minutes on 2 cores)"
  else
    echo "== building cairn (incremental)"
  fi
  cargo build --release
  cairn="$CARGO_TARGET_DIR/release/cairn"
}
