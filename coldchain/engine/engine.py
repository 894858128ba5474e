"""The one interface between coldchain and a container engine. Everything else talks to an
Engine; DockerEngine implements it with the Docker SDK and tests use a fake."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

LogSink = Callable[[str], None]
# A call that is not streaming answers in seconds; a daemon silent this long has stalled (exit 12).
# The CLI's --docker-timeout (COLDCHAIN_DOCKER_TIMEOUT) changes it.
CALL_TIMEOUT_S = 120


@dataclass(frozen=True)
class ImageInfo:
    id: str
    tags: tuple[str, ...]
    labels: dict[str, str]
    size: int


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    labels: dict[str, str]


@dataclass(frozen=True)
class DiskSpace:
    path: str  # the daemon's data root
    free: int  # bytes


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class RunSpec:
    """How one container runs. Defaults are the hardened ones; callers loosen them on purpose."""

    image: str
    command: tuple[str, ...]
    mounts: tuple[Mount, ...] = ()
    environment: dict[str, str] = field(default_factory=dict)
    network: str = "none"
    user: str | None = None
    read_only_root: bool = True
    tmpfs: dict[str, str] = field(default_factory=lambda: {"/tmp": "rw,size=512m"})
    mem_limit: str | None = "8g"
    pids_limit: int | None = 512
    gpus: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    timeout_s: float | None = None  # killed after this long; RunResult.timed_out says so
    # Not the container's random id: TensorFlow quotes the host name in its errors ("binary running on
    # ..."), and reports of the same run must read the same whichever container made them.
    hostname: str = "coldchain"
    platform: str | None = None  # e.g. linux/arm64 for another machine's image (run under emulation)


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    stdout: str
    stderr: str
    oom_killed: bool = False
    timed_out: bool = False
    seconds: float = 0.0  # wall time from create to exit


class Engine(ABC):
    @abstractmethod
    def ping(self) -> str:
        """The server version; raises DaemonUnavailable when nothing answers."""

    @abstractmethod
    def inspect_image(self, ref: str) -> ImageInfo | None:
        """The image, or None when it does not exist."""

    @abstractmethod
    def pull(self, ref: str) -> ImageInfo:
        """Pull from a registry; raises BaseImageError when none answers."""

    @abstractmethod
    def import_rootfs(self, tarball: Path, ref: str, changes: list[str]) -> ImageInfo:
        """Create an image from a root filesystem tarball (docker import), for the daemon's own platform
        (another machine's root file system is loaded as an image archive: environments/rootfs_image.py)."""

    @abstractmethod
    def build(self, context: Path, *, dockerfile: str, buildargs: dict[str, str],
              labels: dict[str, str], tag: str, log: LogSink, nocache: bool = False,
              keep_stages: bool = False, platform: str | None = None) -> ImageInfo:
        """Build from a context tarball (for `platform`, e.g. linux/arm64, where not the daemon's own);
        tags only after the whole build succeeded.
        Raises BuildError with the log tail. Unless `keep_stages`, the images that ended earlier
        build stages (an install stage's wheels and venv) are removed afterwards, failed or not."""

    @abstractmethod
    def tag(self, image_id: str, ref: str) -> None: ...

    @abstractmethod
    def run(self, spec: RunSpec, log: LogSink | None = None) -> RunResult:
        """Run to completion (or to spec.timeout_s, then kill it) and remove the container, whatever
        happens. `log` receives the container's stderr line by line while it runs."""

    @abstractmethod
    def remove_image(self, ref: str) -> None: ...

    @abstractmethod
    def remove_unused_image(self, image_id: str) -> bool:
        """Remove the image only if no tag names it and no container uses it; whether it went."""

    @abstractmethod
    def disk_free(self) -> DiskSpace | None:
        """Free space where the daemon keeps images, when that place is on this machine."""

    @abstractmethod
    def save_images(self, refs: list[str], destination: Path) -> None:
        """One archive of these images and their tags (docker save: shared layers stored once)."""

    @abstractmethod
    def load_images(self, source: Path) -> list[str]:
        """Load an archive written by save_images (docker load); the tags (or ids) it brought."""

    @abstractmethod
    def push(self, ref: str) -> str:
        """Push a tagged image to the registry its name starts with; the manifest digest it got."""

    @abstractmethod
    def pull_digest(self, ref: str) -> ImageInfo:
        """Pull `name@sha256:...` from its registry; raises EngineError when it cannot."""

    @abstractmethod
    def list_images(self, label: str) -> list[ImageInfo]:
        """Images carrying `label` ("key" or "key=value")."""

    @abstractmethod
    def remove_containers(self, label: str) -> int:
        """Force-remove every container carrying `label`; returns how many."""

    @abstractmethod
    def list_containers(self, label: str) -> list[ContainerInfo]:
        """Containers, stopped ones included, carrying `label` ("key" or "key=value")."""

    @abstractmethod
    def remove_container(self, container_id: str) -> None:
        """Force-remove it; one already gone is no error."""

    @abstractmethod
    def gpu_runtime(self) -> bool:
        """Whether the daemon can hand GPUs to containers (NVIDIA runtime present)."""
