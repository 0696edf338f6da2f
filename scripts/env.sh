# Shared setup for the project's scripts: the cargo target dir (kept outside
# the clone so RocksDB is built once per machine) and a check for the C
# toolchain that RocksDB's bindings need.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cairn-target}"
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install Rust (https://rustup.rs) first" >&2
  exit 1
fi
if ! ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 && [ -z "${LIBCLANG_PATH:-}" ]; then
  echo "libclang is missing (RocksDB's bindings need it): apt-get install clang libclang-dev" >&2
  exit 1
fi
if ! command -v c++ >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1 && ! command -v clang++ >/dev/null 2>&1; then
  echo "a C++ compiler is missing (RocksDB is built from source): apt-get install g++" >&2
  exit 1
fi

# Builds the release binary and sets $cairn to its path.
build_cairn() {
  cargo build --release --quiet
  cairn="$CARGO_TARGET_DIR/release/cairn"
}
