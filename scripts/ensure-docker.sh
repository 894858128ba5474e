#!/usr/bin/env bash
# Make sure a Docker daemon answers. Starts one only where none answers and none is running,
# so it never races a second dockerd against an existing one.
set -euo pipefail

log() { printf 'ensure-docker: %s\n' "$*" >&2; }
die() { printf 'ensure-docker: error: %s\n' "$*" >&2; exit 1; }

DOCKERD_LOG=${COLDCHAIN_DOCKERD_LOG:-/var/log/coldchain-dockerd.log}
WAIT_S=${COLDCHAIN_DOCKERD_WAIT:-60}

answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

wait_for_daemon() {
  local i
  for ((i = 0; i < WAIT_S; i++)); do
    answers && return 0
    sleep 1
  done
  return 1
}

command -v docker >/dev/null 2>&1 || NEED_CLIENT=1

if [ -z "${NEED_CLIENT:-}" ] && answers; then
  log "daemon answers (server $(docker version --format '{{.Server.Version}}'))"
  exit 0
fi

if [ -n "${DOCKER_HOST:-}" ] && [[ "$DOCKER_HOST" != unix://* ]]; then
  die "DOCKER_HOST=$DOCKER_HOST does not answer. Start that daemon, or unset DOCKER_HOST to use a local one."
fi

if pgrep -x dockerd >/dev/null 2>&1; then
  log "a dockerd process exists but does not answer yet; waiting up to ${WAIT_S}s"
  wait_for_daemon && { log "daemon answers"; exit 0; }
  die "dockerd is running (pid $(pgrep -x dockerd | tr '\n' ' ')) but does not answer. Check its log, or stop it and rerun 'make docker'."
fi

if [ "$(id -u)" != 0 ]; then
  die "no Docker daemon answers and this is not root. Start Docker ('sudo systemctl start docker', or Docker Desktop), and make sure your user may use it ('sudo usermod -aG docker $USER', then log in again)."
fi

if ! command -v dockerd >/dev/null 2>&1 || [ -n "${NEED_CLIENT:-}" ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    die "no Docker engine is installed and this is not a Debian-family system. Install Docker Engine for your OS, start it, and rerun."
  fi
  log "installing Debian's Docker engine (docker.io)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 || die "apt-get update failed; check the machine's Debian sources, then rerun."
  apt-get install -y -qq docker.io >&2 || die "apt-get install docker.io failed; see the messages above."
fi

if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  log "starting docker with systemctl"
  systemctl start docker >&2 || true
  wait_for_daemon && { log "daemon answers"; exit 0; }
fi

log "starting dockerd in the background (log: $DOCKERD_LOG)"
mkdir -p "$(dirname "$DOCKERD_LOG")"
setsid nohup dockerd >"$DOCKERD_LOG" 2>&1 </dev/null &
if wait_for_daemon; then
  log "daemon answers (server $(docker version --format '{{.Server.Version}}'))"
  exit 0
fi
tail -n 20 "$DOCKERD_LOG" >&2 || true
die "dockerd did not answer within ${WAIT_S}s; its log tail is above ($DOCKERD_LOG)."
