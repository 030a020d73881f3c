#!/usr/bin/env bash
# Installs the servers the tests start (PostgreSQL, Redis, HAProxy) from Debian when missing.
#
# The tests start them, and an S3-compatible server (moto, from the [dev]
# extra), themselves; this only makes sure they are installed. Part of the
# README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."

# haproxy lives in /usr/sbin, which a non-root PATH may lack.
has() { PATH="$PATH:/usr/sbin:/sbin" command -v "$1" >/dev/null; }

missing=()
# Debian keeps the PostgreSQL server binaries under a versioned folder, off PATH.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || has initdb || missing+=(postgresql)
has redis-server || missing+=(redis-server)
has haproxy || missing+=(haproxy)
has chromium || missing+=(chromium)
if ((${#missing[@]})); then
  as_root=()
  [[ $(id -u) -eq 0 ]] || as_root=(sudo)
  install() {
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y --no-install-recommends "${missing[@]}"
  }
  # The package lists may be missing or stale: refresh them only when needed.
  install || { "${as_root[@]}" apt-get update && install; }
fi
