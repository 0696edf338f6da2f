#!/usr/bin/env bash
# The image's build steps, run by the Dockerfile's build stage and by
# scripts/build-image.sh on a machine without a container engine:
#   deploy/docker/build.sh OUT_DIR
# builds the release binary (or takes CAIRN_BIN), strips its debug info into
# OUT_DIR/cairn, checks that it needs no shared library beyond those of the
# runtime image (debian:bookworm-slim: glibc, libgcc, libstdc++) and that it
# runs.
set -euo pipefail
out="${1:?usage: deploy/docker/build.sh OUT_DIR}"
cd "$(dirname "$0")/../.."
mkdir -p "$out"

if [ -n "${CAIRN_BIN:-}" ]; then
  bin="$CAIRN_BIN"
else
  echo "== cargo build --release --locked --bin cairn"
  cargo build --release --locked --bin cairn
  bin="${CARGO_TARGET_DIR:-target}/release/cairn"
fi
[ -x "$bin" ] || { echo "no cairn binary at $bin" >&2; exit 1; }

echo "== stripping $bin into $out/cairn"
objcopy --strip-debug "$bin" "$out/cairn.tmp"
chmod 0755 "$out/cairn.tmp"
mv "$out/cairn.tmp" "$out/cairn"

# Shared libraries the runtime image provides (Debian bookworm-slim).
runtime_libs=" libc.so.6 libm.so.6 libgcc_s.so.1 libstdc++.so.6 libpthread.so.0 libdl.so.2 librt.so.1 ld-linux-x86-64.so.2 ld-linux-aarch64.so.1 "
needed=$(readelf -d "$out/cairn" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
for lib in $needed; do
  case "$runtime_libs" in
    *" $lib "*) ;;
    *) echo "cairn needs $lib, which the runtime image does not have: add its package to the Dockerfile" >&2; exit 1 ;;
  esac
done
echo "== needs only: $(echo $needed)"

"$out/cairn" --version
echo "== $out/cairn: $(du -h "$out/cairn" | cut -f1)"
