"""One exception family for the whole kit. Library code raises these; only the CLI turns
them into messages and exit codes."""

from __future__ import annotations


class ColdchainError(Exception):
    """Base class: `message` says what went wrong, `fix` says what the user should do."""

    exit_code = 1

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

    exit_code = 2


class LockError(UsageError):
    """A lock file is missing, stale, unhashed or disagrees with another lock."""


class WheelhouseError(ColdchainError):
    """A wheel could not be fetched, or does not match the hash its lock pins."""

    exit_code = 3


class DaemonUnavailable(ColdchainError):
    """No Docker daemon answers."""

    exit_code = 4


class BaseImageError(ColdchainError):
    """The base image could neither be pulled nor built locally."""

    exit_code = 5


class BuildError(ColdchainError):
    """`docker build` failed; carries the image, the failing step and the log tail."""

    exit_code = 6

    def __init__(self, message: str, *, image: str, fix: str | None = None, log_tail: str | None = None):
        super().__init__(message, fix=fix, log_tail=log_tail)
        self.image = image


class ContainerError(ColdchainError):
    """A container exited non-zero; carries image, command, exit code and log tail,
    like docker-py's ContainerError."""

    exit_code = 7

    def __init__(self, message: str, *, image: str, command: list[str], container_exit: int,
                 fix: str | None = None, log_tail: str | None = None):
        super().__init__(message, fix=fix, log_tail=log_tail)
        self.image = image
        self.command = command
        self.container_exit = container_exit


class OutputError(ColdchainError):
    """An output could not be written (disk full, read-only, permissions); nothing was replaced."""

    exit_code = 8
