"""Deterministic build contexts: sorted entries, zeroed owners and times, normalised modes,
so identical inputs give an identical tar and Docker's layer cache holds."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class BuildContext:
    files: dict[str, Path] = field(default_factory=dict)  # arcname -> source file
    blobs: dict[str, bytes] = field(default_factory=dict)  # arcname -> generated content

    def add_file(self, arcname: str, source: Path) -> None:
        self.files[arcname] = source

    def add_tree(self, arcname: str, source: Path) -> None:
        for path in sorted(source.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                self.files[f"{arcname}/{path.relative_to(source).as_posix()}"] = path

    def add_bytes(self, arcname: str, data: bytes) -> None:
        self.blobs[arcname] = data

    def names(self) -> list[str]:
        return sorted({*self.files, *self.blobs})

    def write(self, destination: Path) -> None:
        with tarfile.open(destination, "w", format=tarfile.PAX_FORMAT) as tar:
            for directory in self._directories():
                tar.addfile(_info(directory, tarfile.DIRTYPE, 0, 0o755))
            for name in self.names():
                if name in self.blobs:
                    data = self.blobs[name]
                    tar.addfile(_info(name, tarfile.REGTYPE, len(data), 0o644), io.BytesIO(data))
                else:
                    source = self.files[name]
                    mode = 0o755 if os.access(source, os.X_OK) else 0o644
                    with source.open("rb") as handle:
                        tar.addfile(_info(name, tarfile.REGTYPE, source.stat().st_size, mode), handle)

    def _directories(self) -> list[str]:
        found = set()
        for name in self.names():
            parts = name.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                found.add("/".join(parts[:depth]))
        return sorted(found)

    def fingerprint(self, hashed: dict[str, str] | None = None) -> str:
        """A digest of the context's content. `hashed` supplies already-known file digests
        (wheels verified against the lock) so large files are not read twice."""
        digest = hashlib.sha256()
        for name in self.names():
            digest.update(name.encode() + b"\0")
            if name in self.blobs:
                digest.update(hashlib.sha256(self.blobs[name]).digest())
            elif hashed and name in hashed:
                digest.update(hashed[name].encode())
            else:
                digest.update(hashlib.sha256(self.files[name].read_bytes()).digest())
        return digest.hexdigest()


def _info(name: str, kind: bytes, size: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info
