#!/usr/bin/env bash
# Create the host virtualenv and install it from its hashed lock, beside the old one, then rename it
# into place (under a lock, so two runs at once do not remove the venv under each other). On a fresh Debian machine
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

# Two runs at once (two `make infer` on a fresh clone) take turns; flock is released if one dies.
command -v flock >/dev/null 2>&1 || die "flock not found (Debian: apt-get install util-linux)."
exec 9>>"$venv.lock"
flock 9

# The one that waited finds the venv made from this very lock and leaves it alone.
want=$(sha256sum "$lock" | cut -d' ' -f1)
if [ "$(cat "$venv/.lock-sha256" 2>/dev/null)" = "$want" ] && "$venv/bin/python" -c '' 2>/dev/null; then
  printf 'bootstrap-venv: %s ready, made from %s by an earlier run\n' "$venv" "$lock" >&2
  exit 0
fi

# Build beside the old venv and rename it into place: there is always a whole venv at $venv, and the old
# one is moved aside (files a running process has open stay valid), removed only by the next rebuild.
venv_abs=$(cd "$(dirname "$venv")" && pwd)/$(basename "$venv")
new="$venv_abs.new-$$"
trap 'rm -rf "$new"' EXIT
rm -rf "$venv_abs".old-*
"$python" -m venv "$new"
"$new/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r "$lock" \
  || die "installing $lock into $venv failed (see above). If $lock was edited by hand, run 'make lock'."
# pip and venv wrote the build path into scripts' #! lines and activate: point them at the final one.
grep -lI -- "$new" "$new"/bin/* "$new/pyvenv.cfg" 2>/dev/null | while read -r file; do
  sed -i "s|$new|$venv_abs|g" "$file"
done
printf '%s\n' "$want" >"$new/.lock-sha256"
if [ -e "$venv_abs" ]; then mv -T "$venv_abs" "$venv_abs.old-$$"; fi
mv -T "$new" "$venv_abs"
trap - EXIT
printf 'bootstrap-venv: %s ready (%s)\n' "$venv" "$("$venv/bin/python" --version)" >&2
