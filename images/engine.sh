#!/usr/bin/env bash
# The container engine for `make images` and `make e2e`: makes sure one is installed and
# running, then prints the client to use on stdout (everything else goes to stderr).
#
#   images/engine.sh [docker|podman]        (CONTAINER_TOOL; docker by default)
#
# docker: BuildKit is needed (build secrets). Docker CLIs from 23.x build through buildx; where
#   buildx is absent (Debian's docker.io ships none, a docker-ce CLI may lack it), Debian's own
#   client /usr/bin/docker (20.10) still builds with DOCKER_BUILDKIT=1, so it is preferred.
#   When no engine is installed, it installs Debian's docker.io (root only); when dockerd is not
#   running, it starts it (logs in /var/log/hhpulse-dockerd.log).
# podman: used as found (podman builds with BuildKit-style secrets itself).
# Where no engine can run, it says why and exits non-zero: the image targets never pass silently.
set -euo pipefail
tool="${1:-${CONTAINER_TOOL:-docker}}"
say() { echo "engine: $*" >&2; }
die() {
  echo "" >&2
  echo "engine: ERROR: $*" >&2
  echo "engine: the image and e2e targets need a running container engine; nothing was built or run." >&2
  exit 1
}

if [ "$tool" = podman ]; then
  command -v podman >/dev/null || die "podman is not installed (CONTAINER_TOOL=podman)"
  podman info >/dev/null 2>&1 || die "podman does not run here: $(podman info 2>&1 | tail -1)"
  command -v podman
  exit 0
fi
[ "$tool" = docker ] || die "CONTAINER_TOOL must be docker or podman, not '$tool'"

pick_client() {
  # a CLI whose `build` runs BuildKit: Debian's 20.10 client, or any client with buildx
  local c
  for c in /usr/bin/docker $(type -ap docker); do
    [ -x "$c" ] || continue
    if "$c" buildx version >/dev/null 2>&1; then echo "$c"; return 0; fi
    case "$("$c" version --format '{{.Client.Version}}' 2>/dev/null)" in
      1[0-9].* | 20.* | 21.* | 22.*) echo "$c"; return 0 ;;
    esac
  done
  return 1
}

client="$(pick_client || true)"
if [ -z "$client" ] || ! command -v dockerd >/dev/null; then
  [ "$(id -u)" = 0 ] || die "no usable docker engine and not root: install docker.io (with BuildKit) or set CONTAINER_TOOL=podman"
  command -v apt-get >/dev/null || die "no usable docker engine and no apt-get to install one"
  say "installing Debian's docker.io (engine + BuildKit-capable client)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 || die "apt-get update failed"
  apt-get install -y -qq docker.io >&2 || die "apt-get install docker.io failed"
  client="$(pick_client || true)"
  [ -n "$client" ] || die "docker.io installed, but no client that builds with BuildKit was found"
fi

if ! "$client" info >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || die "dockerd is not running and only root can start it here"
  say "starting dockerd (log: /var/log/hhpulse-dockerd.log)"
  if command -v systemctl >/dev/null && systemctl start docker >/dev/null 2>&1; then
    :
  else
    (setsid dockerd >>/var/log/hhpulse-dockerd.log 2>&1 &)
  fi
  for _ in $(seq 1 60); do
    "$client" info >/dev/null 2>&1 && break
    sleep 1
  done
  "$client" info >/dev/null 2>&1 \
    || die "dockerd did not come up in 60 s: $(tail -3 /var/log/hhpulse-dockerd.log 2>/dev/null | tr '\n' ' ')"
fi
echo "$client"
