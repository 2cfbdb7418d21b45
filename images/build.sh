#!/usr/bin/env bash
# Builds hhpulse-pipeline and hhpulse-serving for real (what `make images` runs), then prints
# each image's size and what dominates it.
#
#   images/build.sh PIPELINE_IMAGE SERVING_IMAGE
#
# Environment (the Makefile passes its variables):
#   CONTAINER_TOOL  docker (default) or podman; images/engine.sh installs/starts docker as needed
#   BASE_IMAGE      the base of both images [hhpulse-base:bookworm, built here by images/base.sh
#                   with debootstrap when absent]; any Debian-like image with python3 (3.10+),
#                   python3-venv and libgomp1 works, e.g. one from your registry
#   PIP_CA          CA bundle for pip behind a TLS-intercepting proxy, passed as a BuildKit secret
#                   (never in a layer) [pip's configured cert, else /etc/ssl/certs/ca-certificates.crt;
#                   PIP_CA=none passes none]
#   PIP_CONF        a pip.conf (index URL, credentials) passed as a BuildKit secret [none]
#   IMAGE_SOURCE    org.opencontainers.image.source [the git remote when it is a URL]
set -euo pipefail
cd "$(dirname "$0")/.."
pipeline_image="$1"
serving_image="$2"
client="$(bash images/engine.sh "${CONTAINER_TOOL:-docker}")"
export DOCKER_BUILDKIT=1
base="${BASE_IMAGE:-hhpulse-base:bookworm}"
if [ "$base" = hhpulse-base:bookworm ]; then
  bash images/base.sh "$client" "$base"
fi

version="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
if [ "$revision" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  revision="$revision-dirty"
fi
source_url="${IMAGE_SOURCE:-$(git remote get-url origin 2>/dev/null | grep -E '^https://' | sed 's/\.git$//' || true)}"
source_url="${source_url:-https://github.com/hhpulse/hhpulse}"

ca="${PIP_CA-}"
if [ -z "$ca" ]; then
  ca="${PIP_CERT:-$(pip config get global.cert 2>/dev/null || true)}"
  [ -n "$ca" ] && [ -f "$ca" ] || ca=/etc/ssl/certs/ca-certificates.crt
fi
secrets=()
if [ "$ca" != none ] && [ -f "$ca" ]; then secrets+=(--secret "id=pip_ca,src=$ca"); fi
if [ -n "${PIP_CONF-}" ]; then secrets+=(--secret "id=pip_conf,src=$PIP_CONF"); fi

build() { # name dockerfile tag
  local start=$SECONDS
  echo "images: building $3 (base $base, revision $revision)"
  "$client" build -f "images/$2" -t "$3" \
    --build-arg "BASE_IMAGE=$base" --build-arg "VERSION=$version" \
    --build-arg "REVISION=$revision" --build-arg "SOURCE=$source_url" \
    "${secrets[@]}" .
  echo "images: $3 built in $((SECONDS - start)) s"
}

report() { # tag
  local bytes
  bytes="$("$client" image inspect -f '{{.Size}}' "$1")"
  echo "images: $1: $(awk -v b="$bytes" 'BEGIN {printf "%.0f MB", b / 1e6}'), of which the largest:"
  "$client" run --rm --network none --entrypoint sh "$1" -c \
    'du -sm /opt/venv /usr/lib; cd /opt/venv/lib/python3*/site-packages && du -sm * | sort -rn | head -8' \
    | awk '{printf "    %6d MB  %s\n", $1, $2}'
}

build pipeline pipeline.Dockerfile "$pipeline_image"
build serving serving.Dockerfile "$serving_image"
report "$pipeline_image"
report "$serving_image"
