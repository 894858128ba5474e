"""The start-up sweep: containers and staging directories that runs which died (SIGKILL, a crash, a
power cut) left behind are removed when the next run starts. Only what carries an owner (owner.py)
that is a process of this host that no longer exists: a live run's, or another host's on a shared
daemon, is never touched."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ..engine import Engine
from ..errors import ColdchainError
from ..owner import PID_LABEL, owner_from_labels, owner_from_name

log = logging.getLogger(__name__)


def sweep_containers(engine: Engine) -> int:
    """Remove the containers of dead runs; how many went. A daemon that refuses is only warned about:
    the sweep must never be why a run fails."""
    removed = 0
    try:
        for container in engine.list_containers(PID_LABEL):
            owner = owner_from_labels(container.labels)
            if owner is not None and owner.is_dead():
                engine.remove_container(container.id)
                removed += 1
    except ColdchainError as error:
        log.warning("could not remove the containers of dead runs: %s", error.message)
    if removed:
        log.info("removed %d container(s) left running by runs that no longer exist", removed)
    return removed


def sweep_directories(*folders: Path) -> list[Path]:
    """Remove the owner-marked entries (staging, old outputs, build contexts) of dead runs directly in
    `folders`; the paths that went."""
    removed = []
    for folder in folders:
        try:
            entries = list(folder.iterdir())
        except OSError:
            continue  # not made yet, or unreadable: nothing of ours there
        for entry in entries:
            owner = owner_from_name(entry.name)
            if owner is None or not owner.is_dead():
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    if removed:
        log.info("removed %d staging director%s left by runs that no longer exist: %s", len(removed),
                 "y" if len(removed) == 1 else "ies", ", ".join(str(path) for path in removed))
    return removed
