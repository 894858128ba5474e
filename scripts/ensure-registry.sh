#!/usr/bin/env bash
# Make sure Debian's image registry server (package docker-registry, the CNCF distribution registry)
# is installed, for the push/pull tests: they start it themselves on a loopback port. Nothing is
# pulled from outside; the package comes from Debian's archive.
set -euo pipefail

log() { printf 'ensure-registry: %s\n' "$*" >&2; }
die() { printf 'ensure-registry: error: %s\n' "$*" >&2; exit 1; }

if command -v docker-registry >/dev/null 2>&1; then
  log "$(command -v docker-registry) present"
  exit 0
fi
[ "$(id -u)" = 0 ] || die "docker-registry is not installed and this is not root: run 'apt-get install docker-registry' as root"
command -v apt-get >/dev/null 2>&1 || die "docker-registry is not installed and there is no apt-get: install the CNCF distribution registry ('registry serve CONFIG') by hand"
log "installing Debian's docker-registry"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends docker-registry >/dev/null 2>&1 \
  || { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends docker-registry >/dev/null; } \
  || die "apt-get could not install docker-registry"
# The package starts no server where there is no init system; the tests start their own.
log "installed $(command -v docker-registry)"
