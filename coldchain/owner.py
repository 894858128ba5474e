"""Who made a container or a staging directory: this process, named by its pid, its host and its
start time (the kernel's, so a reused pid is not mistaken for the dead run). The start-up sweep
(steps/sweep.py) removes only what belongs to a process of this host that no longer exists."""

from __future__ import annotations

import hashlib
import os
import re
import socket
from dataclasses import dataclass

PID_LABEL = "io.coldchain.owner.pid"
HOST_LABEL = "io.coldchain.owner.host"
STARTED_LABEL = "io.coldchain.owner.started"
# In a directory name: cc<pid>x<start ticks>x<host hash>; the host is hashed (names may hold any character).
_MARK = re.compile(r"cc(\d+)x(\d+)x([0-9a-f]{8})")


def _host_hash(host: str) -> str:
    return hashlib.sha256(host.encode()).hexdigest()[:8]


def started_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22); None when no such
    process exists (or /proc cannot say)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class Owner:
    pid: int
    host: str  # a container's labels carry the name; a directory's mark its hash
    started: int

    @classmethod
    def current(cls) -> "Owner":
        return cls(os.getpid(), socket.gethostname(), started_ticks(os.getpid()) or 0)

    def labels(self) -> dict[str, str]:
        return {PID_LABEL: str(self.pid), HOST_LABEL: self.host, STARTED_LABEL: str(self.started)}

    @property
    def mark(self) -> str:
        return f"cc{self.pid}x{self.started}x{_host_hash(self.host)}"

    def is_dead(self) -> bool:
        """Only a process of this host can be judged; its pid gone, or taken by a later process, is dead."""
        here = socket.gethostname()
        if self.host not in (here, _host_hash(here)):
            return False
        return started_ticks(self.pid) != self.started


def owner_from_labels(labels: dict) -> Owner | None:
    try:
        return Owner(int(labels[PID_LABEL]), labels[HOST_LABEL], int(labels[STARTED_LABEL]))
    except (KeyError, ValueError):
        return None


def owner_from_name(name: str) -> Owner | None:
    """The owner a directory's name carries (its host as a hash), or None for a name without a mark."""
    found = _MARK.search(name)
    return Owner(int(found.group(1)), found.group(3), int(found.group(2))) if found else None
