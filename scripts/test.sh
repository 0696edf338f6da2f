#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: sets up a Python venv with
# the moto S3 server the S3 tests start, then runs every Rust test.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

if [ ! -x .venv/bin/moto_server ]; then
  echo "== setting up .venv with moto (S3-compatible test server)"
  python3 -m venv .venv || { echo "python3 with venv is needed: apt-get install python3-venv" >&2; exit 1; }
  .venv/bin/pip install --quiet --disable-pip-version-check 'moto[server]>=5'
fi
export CAIRN_MOTO_SERVER="$PWD/.venv/bin/moto_server"

echo "== cargo test (release profile: shares the RocksDB build with the CLI and benches)"
cargo test --release --workspace "$@"
