"""Base images: an official python slim image where a registry answers, otherwise a Debian
root filesystem made with debootstrap and `docker import`ed, with no registry involved."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..config import KIT_LABEL, PLATFORM_LABEL, BaseSpec, Project
from ..engine import Engine, RunSpec
from .emulation import emulated, set_up as set_up_emulation
from ..errors import BaseImageError
from ..fsutil import atomic_write_text
from .rootfs_image import write_archive
from ..owner import Owner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedBase:
    ref: str
    image_id: str
    source: str  # "override", "official" or "local"
    python_version: str  # full, e.g. 3.11.2


# image id -> its python3's version, kept across commands: an image id names immutable content, and
# asking costs a container start on every command.
PYTHON_VERSIONS_FILE = "base-python-versions.json"


def python_version_in(engine: Engine, ref: str, image_id: str = "", cache: Path | None = None) -> str:
    known = _read_cache(cache)
    if image_id and image_id in known:
        return known[image_id]
    result = engine.run(RunSpec(image=ref, command=("python3", "-c", "import platform; print(platform.python_version())"),
                                labels={KIT_LABEL: "coldchain"}, mem_limit="512m"))
    if result.exit_code != 0:
        raise BaseImageError(f"base image {ref} has no working python3 (exit {result.exit_code})",
                             log_tail=result.stderr[-2000:],
                             fix="use a base that ships python3, e.g. an official python:X.Y-slim image")
    version = result.stdout.strip()
    if image_id and cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(cache, json.dumps({**known, image_id: version}, indent=1, sort_keys=True) + "\n")
        except OSError as error:  # a cache that cannot be written only costs the next command a container
            log.debug("not caching the base's Python version in %s: %s", cache, error)
    return version


def _read_cache(cache: Path | None) -> dict:
    try:
        data = json.loads(cache.read_text()) if cache is not None else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def resolve_base(engine: Engine, project: Project, spec: BaseSpec, override: str | None = None,
                 *, allow_pull: bool = True) -> ResolvedBase:
    """Choose the base, logging which one and why. A base for another machine first makes sure this
    host can emulate it (environments/emulation.py: installs and registers qemu as root, or refuses)."""
    set_up_emulation(spec)
    if override:
        info = engine.inspect_image(override) or (engine.pull(override) if allow_pull else None)
        if info is None:
            raise BaseImageError(f"base image {override} is not present locally", fix="pull or build it first")
        source, ref = "override", override
    elif (info := engine.inspect_image(spec.official_image)) is not None:
        source, ref = "official", spec.official_image
    elif (info := engine.inspect_image(spec.local_image)) is not None:
        # Made here because no registry answered: used as it is, without asking a registry again on
        # every command (a timeout where one is unreachable). `coldchain base` after removing it retries.
        source, ref = "local", spec.local_image
    elif allow_pull and (info := _try_pull(engine, spec.official_image)) is not None:
        source, ref = "official", spec.official_image
    else:
        ref = spec.local_image
        log.info("no registry answers; building a local %s base with debootstrap", spec.suite)
        info = build_local_base(engine, project, spec)
        source = "local"
    version = python_version_in(engine, ref, info.id, project.build_dir / PYTHON_VERSIONS_FILE)
    if ".".join(version.split(".")[:2]) != spec.python:
        raise BaseImageError(f"base image {ref} runs Python {version}, but {spec.name} locks are resolved for "
                             f"Python {spec.python}",
                             fix=f"use a base with Python {spec.python}, or a lock resolved for {version}")
    log.info("base %s: %s (%s, %s, Python %s)", spec.name, ref, source, info.id[:19], version)
    return ResolvedBase(ref, info.id, source, version)


def _try_pull(engine: Engine, ref: str):
    try:
        return engine.pull(ref)
    except BaseImageError as error:
        log.info("registry unavailable for %s (%s)", ref, error.message.splitlines()[0][:160])
        return None


def _run(command: list[str], what: str, log_file: Path | None = None) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False, shell=False)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-20:]
        if log_file and log_file.exists():
            tail = log_file.read_text(errors="replace").strip().splitlines()[-20:]
        raise BaseImageError(f"{what} failed (exit {result.returncode})", log_tail="\n".join(tail),
                             fix="check the Debian mirror is reachable (COLDCHAIN_DEBIAN_MIRROR overrides it), "
                                 "or pass --base-image with an image you have")


def build_local_base(engine: Engine, project: Project, spec: BaseSpec):
    if os.geteuid() != 0:
        raise BaseImageError(f"building the local {spec.suite} base needs root (debootstrap)",
                             fix="rerun 'make base' as root, or pass --base-image with a python:"
                                 f"{spec.python}-slim image you have")
    if shutil.which("debootstrap") is None:
        if shutil.which("apt-get") is None:
            raise BaseImageError("debootstrap is not installed and there is no apt-get to install it",
                                 fix="install debootstrap, or pass --base-image")
        log.info("installing debootstrap")
        # A new machine may have no package lists yet.
        _run(["apt-get", "update", "-qq"], "apt-get update")
        _run(["apt-get", "install", "-y", "-qq", "debootstrap"], "apt-get install debootstrap")
    mirror = os.environ.get("COLDCHAIN_DEBIAN_MIRROR")
    project.build_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=project.build_dir, prefix=f"rootfs-{spec.suite}-{Owner.current().mark}-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _debootstrap(spec, rootfs, mirror)
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / cache).glob("*"):
                if entry.is_file():
                    entry.unlink()
        tarball = Path(tmp) / "rootfs.tar"
        _run(["tar", "--sort=name", "--numeric-owner", "-C", str(rootfs), "-cf", str(tarball), "."],
             "packing the root filesystem")
        labels = {KIT_LABEL: "coldchain", "io.coldchain.base.suite": spec.suite,
                  "io.coldchain.base.builder": "debootstrap", "io.coldchain.base.name": spec.name,
                  PLATFORM_LABEL: spec.platform}
        env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"]
        if emulated(spec):  # docker import would call it this daemon's architecture
            archive = Path(tmp) / "image.tar"
            write_archive(tarball, archive, ref=spec.local_image, platform=spec.platform, labels=labels, env=env,
                          cmd=["/bin/bash"])
            engine.load_images(archive)
            info = engine.inspect_image(spec.local_image)
            if info is None:
                raise BaseImageError(f"docker load of the {spec.name} root file system did not produce {spec.local_image}")
            return info
        changes = ["LABEL " + " ".join(f"{key}={value}" for key, value in labels.items()),
                   "ENV " + " ".join(env), 'CMD ["/bin/bash"]']
        return engine.import_rootfs(tarball, spec.local_image, changes)


def _debootstrap(spec: BaseSpec, rootfs: Path, mirror: str | None) -> None:
    """Another machine's root file system in two stages: unpack here, then configure its packages by
    running its own binaries under qemu (the binfmt handler's F flag serves them inside the chroot)."""
    foreign = emulated(spec)
    command = ["debootstrap", "--variant=minbase", f"--arch={spec.arch}", *(["--foreign"] if foreign else []),
               f"--include={','.join(spec.packages)}", spec.suite, str(rootfs)]
    if mirror:
        command.append(mirror)
    log.info("debootstrap %s %s (about a minute%s)", spec.suite, spec.arch,
             "; then its second stage under emulation, several more" if foreign else "")
    _run(command, f"debootstrap {spec.suite} ({spec.arch})", rootfs / "debootstrap" / "debootstrap.log")
    if foreign:
        _run(["chroot", str(rootfs), "/debootstrap/debootstrap", "--second-stage"],
             f"debootstrap's second stage for {spec.arch} (under qemu)", rootfs / "debootstrap" / "debootstrap.log")
