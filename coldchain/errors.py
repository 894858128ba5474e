"""One exception family for the whole kit. Library code raises these, with the context a user needs
(image, command, exit code, log tail, fix); only the CLI turns them into messages and exit codes
(contract.Exit, shared with the containers)."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from .contract import Exit


class ColdchainError(Exception):
    """Base class: `message` says what went wrong, `fix` says what the user should do."""

    exit_code = Exit.UNEXPECTED

    def __init__(self, message: str, *, fix: str | None = None, log_tail: str | None = None):
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.log_tail = log_tail

    def __str__(self) -> str:
        text = self.message
        if self.log_tail:
            text += "\n  --- log tail ---\n" + "\n".join(f"  | {line}" for line in self.log_tail.splitlines())
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


class UsageError(ColdchainError):
    """Bad input from the user: a file, an option, a configuration value."""

    exit_code = Exit.USAGE


class LockError(UsageError):
    """A lock file is missing, stale, unhashed or disagrees with another lock."""


class SignatureError(UsageError):
    """A model directory is unsigned, was changed after signing, or is signed by a key nobody trusts."""


class WheelhouseError(ColdchainError):
    """A wheel could not be fetched, or does not match the hash its lock pins."""

    exit_code = Exit.WHEELHOUSE


class DaemonUnavailable(ColdchainError):
    """No Docker daemon answers."""

    exit_code = Exit.DAEMON


class EngineError(ColdchainError):
    """The container engine refused a request (an API error that is not the kit's fault or the user's input)."""

    exit_code = Exit.ENGINE


class BaseImageError(ColdchainError):
    """The base image could neither be pulled nor built locally."""

    exit_code = Exit.BASE_IMAGE


class EmulationUnavailable(ColdchainError):
    """An image for another machine (arm64 on x86-64) needs qemu emulation this host lacks and cannot set up."""

    exit_code = Exit.EMULATION


class BuildError(ColdchainError):
    """`docker build` failed; carries the image, the failing step and the log tail."""

    exit_code = Exit.BUILD

    def __init__(self, message: str, *, image: str, fix: str | None = None, log_tail: str | None = None):
        super().__init__(message, fix=fix, log_tail=log_tail)
        self.image = image


class ImageNotAvailable(BuildError):
    """An image that had to come ready-made (loaded, pulled) is missing or was built from other inputs."""


class ContainerError(ColdchainError):
    """A container exited non-zero; carries image, command, exit code and log tail, like docker-py's
    ContainerError. `exit_code` is the meaning the container reported (contract.Exit) where it is one
    the kit knows, so a pre-flight or golden failure inside reaches the user as that code."""

    exit_code = Exit.CONTAINER

    def __init__(self, message: str, *, image: str, command: list[str], container_exit: int,
                 fix: str | None = None, log_tail: str | None = None, exit_code: int | None = None):
        super().__init__(message, fix=fix, log_tail=log_tail)
        self.image = image
        self.command = command
        self.container_exit = container_exit
        if exit_code is not None:
            self.exit_code = exit_code


class ContainerTimeout(ContainerError):
    """A container ran past its time limit and was killed."""

    exit_code = Exit.TIMEOUT


class OutputError(ColdchainError):
    """An output could not be written (disk full, read-only, permissions); nothing was replaced."""

    exit_code = Exit.OUTPUT

    @classmethod
    def of(cls, path, error: OSError) -> "OutputError":
        """A failed mkdir, mkdtemp, rename or write under `path`, in the user's words: the path, why, and
        the free space there (a full disk is the user's to fix, not a coldchain bug)."""
        reason = "the disk is full" if error.errno in (errno.ENOSPC, errno.EDQUOT) else (error.strerror or str(error))
        free = free_bytes(path)
        where = f"{free / 1e9:.2f} GB free there" if free is not None else "free space unknown"
        return cls(f"cannot write {path}: {reason} ({where}); the previous {Path(path).name} (if any) is unchanged",
                   fix="free space (docker image prune removes dangling images) or choose another output "
                       "directory, then rerun")


def free_bytes(path) -> int | None:
    """Bytes free on the disk that holds `path` (its nearest existing parent); None if unknown."""
    place = Path(os.path.abspath(path))
    while not place.exists() and place.parent != place:
        place = place.parent
    try:
        return shutil.disk_usage(place).free
    except OSError:
        return None


class ImageCorrupt(ColdchainError):
    """An image's files differ from the record made when it was built (images --verify)."""

    exit_code = Exit.IMAGE_CORRUPT
