"""Hashes for a lock resolved for another machine (the arm64 environment on an x86-64 host).

The pins come from pip-compile run under the other machine's own Python (resolver.py), where
markers such as `platform_machine == "aarch64"` are judged right. Its --generate-hashes is not used
there: where the index's file URLs are not the ones PyPI's JSON API lists, pip-tools downloads and
hashes every file of every pinned version (each TensorFlow wheel of every Python and platform, GBs)
and under qemu that takes hours. Instead the host downloads, for each pin, the wheels pip picks for
that machine, Python and glibc (`pip download --no-deps --only-binary=:all: --platform ...`), and
the lock pins exactly those files' sha256: the very files the image installs, and no others.
"""

from __future__ import annotations

import re

from ..config import BaseSpec, LockSpec, Project
from ..errors import LockError
from .locks import normalize
from .wheelhouse import Wheelhouse

_PIN_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)\s*$")


def unhashed_pins(text: str) -> list[tuple[str, str]]:
    """(name, version) of every `name==version` line pip-compile wrote without hashes."""
    return [(match.group(1), match.group(2)) for line in text.splitlines() if (match := _PIN_LINE.match(line))]


def add_hashes(text: str, hashes: dict[tuple[str, str], list[str]], source: str) -> str:
    """The lock with each pin followed by its wheels' `--hash=sha256:...` lines, as --generate-hashes
    writes them. A pin without a wheel for the machine is refused, naming it."""
    lines = []
    for line in text.splitlines():
        match = _PIN_LINE.match(line)
        if not match:
            lines.append(line)
            continue
        found = hashes.get((normalize(match.group(1)), match.group(2)))
        if not found:
            raise LockError(f"{match.group(1)}=={match.group(2)} has no wheel for this lock's machine",
                            fix=f"constrain it in {source} to a version that ships one, then rerun 'make lock'")
        entries = [f"{match.group(1)}=={match.group(2)}"] + [f"    --hash={digest}" for digest in sorted(found)]
        lines.append(" \\\n".join(entries))
    return "\n".join(lines) + "\n"


def hash_for_machine(project: Project, spec: LockSpec, base: BaseSpec, text: str) -> str:
    """`text` (pip-compile's output without hashes) with the hashes of `base`'s wheels for each pin;
    the wheels stay in the wheelhouse, where building the image finds them verified."""
    pins = unhashed_pins(text)
    hashes = Wheelhouse(project, base).fetch_for_hashing(spec, pins)
    return add_hashes(text, hashes, spec.source)
