"""Another machine's root file system as an image archive that `docker load` takes, with the
architecture in its config.

`docker import` records the daemon's own architecture whatever the tarball holds (Docker 20.10
ignores --platform there), so an arm64 base imported on x86-64 would call itself amd64: Docker on a
real arm64 machine would then warn on every run, and the image's platform would be a lie. An archive
in `docker save`'s format (manifest.json, the config, one layer) states it instead.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from ..fsutil import file_sha256

# Fixed, so the same root file system gives the same image id.
CREATED = "1970-01-01T00:00:00Z"


def write_archive(rootfs_tar: Path, destination: Path, *, ref: str, platform: str, labels: dict[str, str],
                  env: list[str], cmd: list[str]) -> None:
    """An image archive of one layer (the root file system tarball, uncompressed) named `ref`."""
    os_name, arch = platform.split("/")[:2]
    layer_digest = file_sha256(rootfs_tar)
    config = {
        "architecture": arch, "os": os_name, "created": CREATED,
        "config": {"Env": env, "Cmd": cmd, "Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
        "history": [{"created": CREATED, "created_by": "coldchain: debootstrap, packed and loaded"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_name = f"{layer_digest}/layer.tar"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [ref], "Layers": [layer_name]}]).encode()
    with tarfile.open(destination, "w") as archive:
        archive.add(rootfs_tar, arcname=layer_name)
        for name, data in ((config_name, config_bytes), ("manifest.json", manifest)):
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            archive.addfile(entry, io.BytesIO(data))
