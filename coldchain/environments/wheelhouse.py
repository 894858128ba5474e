"""The wheelhouse: every wheel a lock pins, fetched on the host and checked against the lock's
hashes, so images install with --no-index and never touch the network."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..config import BaseSpec, LockSpec, Project
from ..errors import WheelhouseError
from ..fsutil import file_sha256
from .locks import REGENERATE_COMMAND, Lock, Pin, normalize


def wheel_identity(filename: str) -> tuple[str, str] | None:
    """(normalized name, version) from a wheel file name, or None for anything else."""
    if not filename.endswith(".whl"):
        return None
    parts = filename[:-4].split("-")
    if len(parts) < 5:
        return None
    return normalize(parts[0]), parts[1]


@dataclass(frozen=True)
class Wheel:
    pin: Pin
    path: Path
    sha256: str  # "sha256:<hex>" of this file, verified to be one the lock pins


def platform_args(python: str, glibc: str, machine: str = "x86_64") -> list[str]:
    """pip download flags for the image's interpreter, libc and machine, not the host's."""
    major, newest = (int(x) for x in glibc.split("_"))
    # manylinux2014 is the first to define aarch64 wheels (glibc 2.17).
    oldest = 5 if machine == "x86_64" else 17
    tags = [f"manylinux_{major}_{minor}_{machine}" for minor in range(oldest, newest + 1)]
    legacy = ("manylinux2014", "manylinux2010", "manylinux1") if machine == "x86_64" else ("manylinux2014",)
    tags += [f"{name}_{machine}" for name in legacy] + [f"linux_{machine}"]
    args = ["--only-binary=:all:", "--implementation", "cp", "--python-version", python]
    for tag in tags:
        args += ["--platform", tag]
    return args


class Wheelhouse:
    def __init__(self, project: Project, base: BaseSpec):
        self.base = base
        # One directory per machine: a lock's pins carry the hashes of every platform's wheel, so an
        # aarch64 numpy beside the x86-64 one would pass the hash check of either image.
        suffix = "" if base.machine == "x86_64" else f"-{base.machine}"
        self.directory = project.wheelhouse / f"cp{base.python.replace('.', '')}{suffix}"
        self._verified: dict[Path, str] = {}

    def _hash(self, path: Path) -> str:
        stat = path.stat()
        key = (path, stat.st_size, stat.st_mtime_ns)
        cached = self._verified.get(key)  # type: ignore[arg-type]
        if cached is None:
            cached = self._verified[key] = "sha256:" + file_sha256(path)  # type: ignore[index]
        return cached

    def _present(self, pin: Pin) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if wheel_identity(p.name) == (pin.name, pin.version))

    def verify(self, spec: LockSpec, lock: Lock, pin: Pin, path: Path) -> None:
        actual = self._hash(path)
        if actual not in pin.hashes:
            raise WheelhouseError(
                f"{pin.name}=={pin.version}: {path} has {actual}, which is not among the hashes "
                f"{spec.lock} pins for {pin.name} (line {pin.line})",
                fix=f"if you edited {spec.lock}, regenerate it with '{REGENERATE_COMMAND}'; if the wheel "
                    f"was swapped, delete {path} and rerun so it is fetched again")

    def ensure(self, spec: LockSpec, lock: Lock) -> list[Wheel]:
        """Fetch what is missing, verify everything, return one wheel per pin."""
        missing = [pin for pin in lock.pins.values() if not self._present(pin)]
        if missing:
            self._download(spec, missing)
        wheels = []
        for pin in sorted(lock.pins.values(), key=lambda p: p.name):
            candidates = [p for p in self._present(pin) if self._hash(p) in pin.hashes]
            if not candidates:
                present = self._present(pin)
                if present:
                    self.verify(spec, lock, pin, present[0])
                raise WheelhouseError(f"{pin.name}=={pin.version} from {spec.lock} has no wheel for "
                                      f"Python {self.base.python}",
                                      fix=f"pin a version that ships a wheel in {spec.source}, then '{REGENERATE_COMMAND}'")
            wheels.append(Wheel(pin, candidates[0], self._hash(candidates[0])))
        return wheels

    def fetch_for_hashing(self, spec: LockSpec, pins: list[tuple[str, str]]) -> dict[tuple[str, str], list[str]]:
        """The sha256 of this machine's wheels of each (name, version), fetched where missing: how a
        lock resolved for another machine gets its hashes (foreign_lock.py)."""
        missing = [(name, version) for name, version in pins
                   if not self._present(Pin(normalize(name), version, frozenset(), 0))]
        if missing:
            self._download(spec, [f"{name}=={version}\n" for name, version in missing], require_hashes=False)
        return {(normalize(name), version): [self._hash(path) for path in
                                             self._present(Pin(normalize(name), version, frozenset(), 0))]
                for name, version in pins}

    def _download(self, spec: LockSpec, pins: list[Pin] | list[str], *, require_hashes: bool = True) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.directory.parent, prefix=".download-") as tmp:
            requirements = Path(tmp) / "requirements.txt"
            requirements.write_text("".join(
                f"{pin.name}=={pin.version} " + " ".join(f"--hash={h}" for h in sorted(pin.hashes)) + "\n"
                if isinstance(pin, Pin) else pin for pin in pins))
            target = Path(tmp) / "wheels"
            command = [sys.executable, "-m", "pip", "download", "--no-deps",
                       *(["--require-hashes"] if require_hashes else []),
                       "--progress-bar", "off", "--dest", str(target), "-r", str(requirements),
                       *platform_args(self.base.python, self.base.glibc, self.base.machine)]
            result = subprocess.run(command, capture_output=True, text=True, check=False, shell=False,
                                    env=dict(os.environ, PIP_FIND_LINKS=""))
            if result.returncode != 0:
                raise self._explain(spec, result.stdout + result.stderr)
            for fetched in sorted(target.iterdir()):
                os.replace(fetched, self.directory / fetched.name)

    @staticmethod
    def _explain(spec: LockSpec, output: str) -> WheelhouseError:
        tail = "\n".join(output.strip().splitlines()[-15:])
        if "DO NOT MATCH THE HASHES" in output:
            names = sorted(set(re.findall(r"^\s+([A-Za-z0-9._-]+)==\S+ from ", output, re.MULTILINE)))
            return WheelhouseError(
                f"{', '.join(names) or 'a package'}: the downloaded wheel does not match the hash in {spec.lock}",
                fix=f"if you edited {spec.lock}, regenerate it with '{REGENERATE_COMMAND}'; otherwise the "
                    "index served a different file than when the lock was made: investigate before trusting it",
                log_tail=tail)
        return WheelhouseError(f"pip could not download the wheels {spec.lock} pins", log_tail=tail,
                               fix="check the network and the package index, then rerun")
