#!/bin/sh
# Makes the cluster CA and a certificate per site, proxy and client into ./certs (next to this
# file), with the image's own `meridian certs` (no binary needed on the host), owned by the
# image's unprivileged user 65532 so the containers can read their keys (the certificate step
# itself runs as root in its container, to hand the files over).
set -eu
cd "$(dirname "$0")"
mkdir -p certs
docker run --rm --user 0:0 -v "$PWD/certs:/out" "${MERIDIAN_IMAGE:-meridian:latest}" certs --out /out \
  --owner 65532:65532 \
  --sites us-east-1,us-west-2,eu-west-1,eu-central-1,ap-northeast-1 \
  --proxies proxy-us-east-1,proxy-us-west-2,proxy-eu-west-1,proxy-eu-central-1,proxy-ap-northeast-1 \
  --clients meridian-tool
