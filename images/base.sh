#!/usr/bin/env bash
# Builds the local base image of both hhpulse images when no registry can be pulled from:
# a minimal Debian bookworm with python3, python3-venv, libgomp1 (XGBoost's OpenMP) and the
# Debian CA bundle, made with debootstrap from the Debian mirror apt uses here, then imported.
#
#   images/base.sh CLIENT IMAGE        e.g. images/base.sh /usr/bin/docker hhpulse-base:bookworm
#
# Cached: does nothing when IMAGE exists. DEBIAN_MIRROR overrides the mirror.
set -euo pipefail
client="$1"
image="$2"
if "$client" image inspect "$image" >/dev/null 2>&1; then
  echo "base: $image exists ($("$client" image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
  exit 0
fi

mirror() {
  # the first Debian archive (not -security) apt is configured with: one-line or deb822 format
  local f uri
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri="$(sed -n -e 's/^deb \(\[[^]]*\] \)\{0,1\}\(http[^ ]*\/debian\)\/\{0,1\} .*/\2/p' \
      -e 's/^URIs: *\(http[^ ]*\/debian\)\/\{0,1\}$/\1/p' "$f" | head -1)"
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  echo "http://deb.debian.org/debian"
}

if ! command -v debootstrap >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "base: debootstrap is missing and only root can install it" >&2; exit 1; }
  { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; }; } >&2
fi
[ "$(id -u)" = 0 ] || { echo "base: debootstrap needs root" >&2; exit 1; }

url="${DEBIAN_MIRROR:-$(mirror)}"
dir="$(mktemp -d /var/tmp/hhpulse-base.XXXXXX)"
trap 'rm -rf "$dir"' EXIT
echo "base: debootstrap bookworm from $url (about a minute)"
start=$SECONDS
debootstrap --variant=minbase --include=python3,python3-venv,libgomp1,ca-certificates \
  bookworm "$dir" "$url" >"$dir.log" 2>&1 || { tail -20 "$dir.log" >&2; rm -f "$dir.log"; exit 1; }
rm -f "$dir.log"
# what a runtime never reads: apt's caches and lists, docs, man pages, translations
rm -rf "$dir"/var/cache/apt/* "$dir"/var/lib/apt/lists/* "$dir"/usr/share/doc/* \
  "$dir"/usr/share/man/* "$dir"/usr/share/info/* "$dir"/usr/share/locale/* "$dir"/var/log/*
tar -C "$dir" --numeric-owner -c . | "$client" import \
  -c 'ENV LANG=C.UTF-8' -c 'CMD ["python3"]' \
  -m "debootstrap --variant=minbase bookworm $url" - "$image" >/dev/null
echo "base: $image built in $((SECONDS - start)) s ($("$client" image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
