"""Typed, frozen configuration: which locks exist, which bases and images are built from them.
Everything the kit builds is declared here once; commands receive these objects, never flags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

KIT_LABEL = "io.coldchain.kit"
RUN_LABEL = "io.coldchain.run"
# The platform an image (or a base) is for, e.g. linux/arm64: runs pass it, so Docker need not guess.
PLATFORM_LABEL = "io.coldchain.platform"
# The tag prefix of one test session's images: cctest-<pid>-<6 hex>. `make prune` removes the tags of
# sessions whose process is gone (killed before their cleanup ran); a live session's stay.
TEST_SESSION_PREFIX = "cctest"


def test_session_prefix() -> str:
    import os
    import uuid
    return f"{TEST_SESSION_PREFIX}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class LockSpec:
    name: str
    source: str  # the .in file, relative to the project root
    lock: str  # the generated lock, relative to the project root
    python: str  # the Python (major.minor) the lock is resolved for and installed into
    # locks whose pins this one must share, version for version
    agrees_with: tuple[str, ...] = ()
    base: str = "bookworm"  # the base whose python3 the lock is for (and resolved in, off-host)


@dataclass(frozen=True)
class BaseSpec:
    name: str  # e.g. "bookworm"
    suite: str  # Debian suite for debootstrap
    python: str  # the python3 that suite ships
    official_image: str  # used when a registry answers
    glibc: str  # newest manylinux tag the suite's glibc accepts
    packages: tuple[str, ...] = ("python3", "python3-venv")  # what debootstrap installs
    tag: str = ""  # local image tag; defaults to the name
    # The machine its binaries are for: another than the host's runs under qemu user emulation
    # (environments/emulation.py), the same image runs natively on such a machine.
    platform: str = "linux/amd64"

    @property
    def local_image(self) -> str:
        return f"coldchain-base:{self.tag or self.name}"

    @property
    def arch(self) -> str:
        """Debian's name for the architecture (debootstrap --arch, Docker's platform)."""
        return self.platform.split("/")[1]

    @property
    def machine(self) -> str:
        """The kernel's name for it (uname -m, wheel platform tags, ELF e_machine's meaning)."""
        return MACHINES.get(self.arch, self.arch)


# Docker/Debian architecture -> uname -m.
MACHINES = {"amd64": "x86_64", "arm64": "aarch64"}


@dataclass(frozen=True)
class ImageSpec:
    role: str  # "train" or "infer"
    device: str  # "cpu" or "cuda"
    lock: str  # LockSpec name
    base: str  # BaseSpec name
    env: str = ""  # a drift-test environment (drift/matrix.toml) built from its own lock
    dockerfile_name: str = ""  # default: Dockerfile.<role>
    lock_spec: LockSpec | None = None  # a lock outside LOCKS (a user's environment that travels with a model)

    @property
    def name(self) -> str:
        return f"drift-{self.env}" if self.env else f"{self.role}-{self.device}"

    @property
    def locked(self) -> LockSpec:
        return self.lock_spec or LOCKS[self.lock]

    @property
    def dockerfile(self) -> str:
        return self.dockerfile_name or f"Dockerfile.{self.role}"

    def tag(self, prefix: str = "coldchain") -> str:
        if self.env:
            return f"{prefix}-{'drift' if self.role != 'reference' else 'reference'}:{self.env}"
        return f"{prefix}-{self.role}:{self.device}"


LOCKS: dict[str, LockSpec] = {
    spec.name: spec
    for spec in (
        LockSpec("host", "requirements-host.in", "requirements-host.lock", "3.11"),
        LockSpec("train-cpu", "requirements.in", "requirements.lock", "3.11"),
        LockSpec("infer-cpu", "requirements-infer.in", "requirements-infer.lock", "3.11",
                 agrees_with=("train-cpu",)),
        LockSpec("train-cuda", "requirements-cuda.in", "requirements-cuda.lock", "3.11",
                 agrees_with=("train-cpu",)),
        LockSpec("infer-cuda", "requirements-infer-cuda.in", "requirements-infer-cuda.lock", "3.11",
                 agrees_with=("train-cuda", "infer-cpu")),
        LockSpec("bench", "requirements-bench.in", "requirements-bench.lock", "3.11", agrees_with=("train-cpu",)),
        # Drift-test environments (drift/matrix.toml): resolved on their own on purpose, so they
        # differ from the training lock the way real inference hosts do.
        LockSpec("drift-tf2.21-py3.11", "drift/locks/tf2.21-py3.11.in", "drift/locks/tf2.21-py3.11.lock", "3.11"),
        LockSpec("drift-tf2.17-py3.11", "drift/locks/tf2.17-py3.11.in", "drift/locks/tf2.17-py3.11.lock", "3.11"),
        LockSpec("drift-tf2.7-py3.9", "drift/locks/tf2.7-py3.9.in", "drift/locks/tf2.7-py3.9.lock", "3.9",
                 base="bullseye"),
        LockSpec("drift-infer-numpy-drift", "drift/locks/infer-numpy-drift.in",
                 "drift/locks/infer-numpy-drift.lock", "3.11"),
        # The edge device: the inference lock's own input resolved for aarch64 (inside the arm64 base,
        # so markers such as tensorflow's tensorflow-cpu-aws dependency are judged by an aarch64 Python).
        LockSpec("drift-arm64", "requirements-infer.in", "drift/locks/arm64-py3.11.lock", "3.11",
                 agrees_with=("infer-cpu",), base="bookworm-arm64"),
    )
}

BASES: dict[str, BaseSpec] = {
    spec.name: spec
    for spec in (
        BaseSpec("bookworm", "bookworm", "3.11", "python:3.11-slim-bookworm", "2_36"),
        BaseSpec("bullseye", "bullseye", "3.9", "python:3.9-slim-bullseye", "2_31"),
        BaseSpec("trixie", "trixie", "3.13", "python:3.13-slim-trixie", "2_41"),
        BaseSpec("bookworm-arm64", "bookworm", "3.11", "arm64v8/python:3.11-slim-bookworm", "2_36",
                 platform="linux/arm64"),
        # For compiling custom TF ops against the training image's headers: bookworm plus g++.
        BaseSpec("bookworm-devel", "bookworm", "3.11", "python:3.11-bookworm", "2_36",
                 packages=("python3", "python3-venv", "g++")),
    )
}

IMAGES: dict[str, ImageSpec] = {
    spec.name: spec
    for spec in (
        ImageSpec("train", "cpu", "train-cpu", "bookworm"),
        ImageSpec("infer", "cpu", "infer-cpu", "bookworm"),
        ImageSpec("train", "cuda", "train-cuda", "bookworm"),
        ImageSpec("infer", "cuda", "infer-cuda", "bookworm"),
    )
}


# The runtimes image: the inference environment plus tf2onnx, ONNX Runtime and OpenVINO (make bench,
# coldchain convert, infer --runtime onnxruntime|openvino).
BENCH_IMAGE = ImageSpec("bench", "cpu", "bench", "bookworm", dockerfile_name="Dockerfile.infer")
RUNTIMES_IMAGE = BENCH_IMAGE


@dataclass(frozen=True)
class Project:
    """Where the kit's files live; every path the host side touches derives from here."""

    root: Path

    def path(self, relative: str) -> Path:
        return self.root / relative

    @property
    def wheelhouse(self) -> Path:
        return self.root / "wheelhouse"

    @property
    def build_dir(self) -> Path:
        return self.root / "build"

    @classmethod
    def find(cls, start: Path | None = None) -> "Project":
        here = (start or Path.cwd()).resolve()
        for candidate in (here, *here.parents):
            if (candidate / "requirements.in").is_file() and (candidate / "coldchain").is_dir():
                return cls(candidate)
        raise UsageError(f"{here} is not inside a coldchain checkout (no requirements.in found)",
                         fix="run coldchain from the project directory, or pass --project DIR")
