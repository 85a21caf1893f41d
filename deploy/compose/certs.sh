#!/bin/sh
# Makes the cluster CA and a certificate per site, proxy and client into ./certs (next to this
# file), with the image's own `meridian certs` (no binary needed on the host).
set -eu
cd "$(dirname "$0")"
mkdir -p certs
docker run --rm -v "$PWD/certs:/out" "${MERIDIAN_IMAGE:-meridian:latest}" certs --out /out \
  --sites us-east-1,us-west-2,eu-west-1,eu-central-1,ap-northeast-1 \
  --proxies proxy-us-east-1,proxy-us-west-2,proxy-eu-west-1,proxy-eu-central-1,proxy-ap-northeast-1 \
  --clients meridian-tool
