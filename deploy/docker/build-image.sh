#!/bin/sh
# Builds the `meridian` container image from this checkout without pulling anything:
#   deploy/docker/build-image.sh [IMAGE]        (default IMAGE: meridian:latest)
# The image holds the release binary and exactly the shared libraries `ldd` names.
# MERIDIAN_BIN=path uses an already built binary instead of running cargo.
set -eu
image=${1:-meridian:latest}
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ -n "${MERIDIAN_BIN:-}" ]; then
  bin=$MERIDIAN_BIN
else
  cargo build --release --manifest-path "$root/Cargo.toml" >&2
  bin="$root/target/release/meridian"
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/etc/meridian" "$ctx/data"
cp "$bin" "$ctx/rootfs/usr/local/bin/meridian"
# Debug info is for the developers' machine, not the image.
if command -v objcopy >/dev/null 2>&1; then
  objcopy --strip-debug "$ctx/rootfs/usr/local/bin/meridian"
fi
for lib in $(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
  mkdir -p "$ctx/rootfs$(dirname "$lib")"
  cp -L "$lib" "$ctx/rootfs$lib"
done
cp "$root/deploy/docker/Dockerfile" "$ctx/Dockerfile"
docker build -q -t "$image" "$ctx"
