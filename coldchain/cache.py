"""Artifacts made once and reused while their inputs stay the same: a stamp beside the output
records the inputs; the step runs again only when they change."""

from __future__ import annotations

import fcntl
import hashlib
import json
from pathlib import Path
from typing import Callable

from .fsutil import atomic_write_text

STAMP = ".coldchain-inputs.json"


def tree_fingerprint(root: Path, skip_prefixes: tuple[str, ...] = ("events.out.tfevents", ".")) -> str:
    """A digest of every file under root (names and contents), skipping event files and dotfiles."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.startswith(skip_prefixes):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def image_identity(labels: dict[str, str], image_id: str) -> str:
    """What an image computes with: its inputs' fingerprint, not its id (which a new commit's revision
    label changes without changing a byte that matters)."""
    if "io.coldchain.context.sha256" not in labels:
        return image_id
    return labels["io.coldchain.context.sha256"] + labels.get("io.coldchain.train.image", "")


def produce(output: Path, key: dict, make: Callable[[], object]) -> bool:
    """Run `make` unless `output` carries a stamp of the same `key`; True when it ran. Two runs in
    one checkout serialise on a lock file, so the second finds the first one's stamp."""
    stamp = output / STAMP
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output.parent / f".{output.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if stamp.is_file() and json.loads(stamp.read_text()) == key:
                return False
        except ValueError:
            pass  # a damaged stamp means: make it again
        make()
        atomic_write_text(stamp, json.dumps(key, sort_keys=True))
    return True
