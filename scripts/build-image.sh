#!/usr/bin/env bash
# Builds the cairn image. With a container engine (docker or podman that
# answers), this is `docker build -t cairn:VERSION .`. Without one, it runs
# the image's build steps here (deploy/docker/build.sh, the same script the
# Dockerfile's build stage runs) and stages the image's contents under
# target/image/rootfs: the stripped binary and the CA roots the runtime
# stage installs, then runs the staged binary.
#   bash scripts/build-image.sh [TAG]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
tag="${1:-cairn:$version}"

for engine in docker podman; do
  if command -v "$engine" >/dev/null && "$engine" info >/dev/null 2>&1; then
    echo "== $engine build -t $tag ."
    exec "$engine" build -t "$tag" .
  fi
done

echo "== no container engine answers here: running the image's build steps on this machine"
root="${CARGO_TARGET_DIR:-target}/image/rootfs"
rm -rf "$root"
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/cache"
bash deploy/docker/build.sh "$root/usr/local/bin"
ca=/etc/ssl/certs/ca-certificates.crt
[ -s "$ca" ] || { echo "no CA roots at $ca: apt-get install ca-certificates" >&2; exit 1; }
cp "$ca" "$root/etc/ssl/certs/"
SSL_CERT_FILE="$root/etc/ssl/certs/ca-certificates.crt" "$root/usr/local/bin/cairn" --version
echo "== staged the contents of $tag under $root ($(du -sh "$root" | cut -f1)); build the image itself where a Docker engine runs: docker build -t $tag ."
