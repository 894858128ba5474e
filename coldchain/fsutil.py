"""Files on the host: writes that never leave a half-written file behind (temp file in the same
directory, then rename), every write failure as an OutputError naming the path and the free space,
and a file's sha256."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import OutputError

_CHUNK = 1 << 20


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Whatever OSError the writes in this block (mkdir, mkdtemp, rename, write) raise becomes an
    OutputError naming `path` and the free space there."""
    try:
        yield
    except OSError as error:
        raise OutputError.of(path, error) from None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` whole or not at all; an existing file is kept if anything fails."""
    with writing(path):
        _atomic_write(path, data)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp makes 0600; locks, reports and outputs are meant to be read by others and by containers.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def file_sha256(path: Path, *, unreadable_ok: bool = False) -> str | None:
    """The file's sha256 in hex, read a megabyte at a time (a wheel may be hundreds); an unreadable or
    missing file raises OSError, or gives None with `unreadable_ok`."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    except OSError:
        if unreadable_ok:
            return None
        raise
    return digest.hexdigest()


@contextmanager
def output_lock(destination: Path):
    """Held while an output is swapped, so two runs writing into one folder take turns: flock on the
    folder itself (no lock file left behind; the kernel releases it when the holder dies, so a killed
    run never leaves it locked). A swap is two renames, so one lock per folder costs nothing."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(destination.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def replace_output(produced: Path, destination: Path, *, old_name: str) -> None:
    """Swap the new output in under the output's lock; an older result is removed only after the new
    one is in place. When the second rename fails the old result is put back (rollback) and the
    failure raised as an OutputError; `old_name` names the old copy meanwhile (an owner-marked name,
    so the start-up sweep can tell a dead run's leftovers)."""
    with output_lock(destination):
        if not (destination.is_dir() and not destination.is_symlink()):
            _renamed(produced, destination)
            return
        old = destination.with_name(old_name)
        _renamed(destination, old)
        try:
            _renamed(produced, destination)
        except OutputError:
            os.replace(old, destination)  # rollback: the previous result stays where it was
            raise
    shutil.rmtree(old, ignore_errors=True)


def _renamed(source: Path, target: Path) -> None:
    try:
        os.replace(source, target)
    except OSError as error:
        raise OutputError.of(target, error) from None
