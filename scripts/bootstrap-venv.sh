#!/usr/bin/env bash
# Create the host virtualenv and install it from its hashed lock. On a fresh Debian machine
# the venv module may be missing; install it there (as root) instead of failing obscurely.
set -euo pipefail
python=$1 venv=$2 lock=$3

die() { printf 'bootstrap-venv: error: %s\n' "$*" >&2; exit 1; }

command -v "$python" >/dev/null 2>&1 || die "$python not found. Install Python 3.11 (Debian: apt-get install python3 python3-venv) or run 'make PYTHON=/path/to/python3.11'."

if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    printf 'bootstrap-venv: installing python3-venv\n' >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
  else
    die "$python has no venv/ensurepip module. Install it (Debian: sudo apt-get install python3-venv) and rerun."
  fi
fi

rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r "$lock" \
  || die "installing $lock into $venv failed (see above). If $lock was edited by hand, run 'make lock'."
printf 'bootstrap-venv: %s ready (%s)\n' "$venv" "$("$venv/bin/python" --version)" >&2
