"""Images across CI jobs that do not share a Docker daemon: an archive passed as an artifact
(docker save/load), or a registry (push, then pull by digest). Either way the receiving job checks
every image against the inputs its own checkout would build it from, before it uses one: an archive
or a registry from another commit is refused, naming what differs, instead of testing stale images."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ..config import IMAGES, Project
from ..engine import Engine
from ..environments.images import SOURCE_LABEL, BuildOptions, BuiltImage, ensure_image
from ..errors import ColdchainError, ImageNotAvailable, UsageError
from ..fsutil import atomic_write_text, writing
from ..environments.matrix import OP_BUILD_ENV, CaseSpec, Matrix
from .shards import images_needed
from .variants import freeze_image

log = logging.getLogger(__name__)
INDEX_FORMAT = 1
HEATMAP_IMAGE = "infer-cpu"  # the merge job renders the heatmap in it


def image_names(matrix: Matrix, cases: list[CaseSpec], *, merge: bool) -> list[str]:
    """What a job needs, as drift-plan names it: kit images, `env:NAME`, `opbuild`; the job that
    merges (or runs unsharded) also renders the heatmap."""
    names = set(images_needed(matrix, cases))
    if merge:
        names.add(HEATMAP_IMAGE)
    return sorted(names)


def resolve(engine: Engine, project: Project, matrix: Matrix, names: list[str], options: BuildOptions) -> list[BuiltImage]:
    """Each named image, built when missing (options.build) or else found and checked against this
    checkout's inputs."""
    built: dict[str, BuiltImage] = {}
    for name in sorted(names, key=lambda n: n == OP_BUILD_ENV):  # opbuild is made from train-cpu
        if name == OP_BUILD_ENV:
            freeze_image(engine, project, OP_BUILD_ENV, options, built)
            continue
        spec = matrix.image_spec(name.removeprefix("env:")) if name.startswith("env:") else IMAGES.get(name)
        if spec is None:
            raise UsageError(f"no image named {name!r} in the kit or the drift matrix",
                             fix="use the names 'coldchain drift-plan' prints under images")
        built[name] = ensure_image(engine, project, spec, options)
    return [built[name] for name in sorted(built)]


def with_bases(images: list[BuiltImage]) -> list[str]:
    """The images' tags and their bases' (a receiving job resolves the base by name before it can
    check an image built on it)."""
    refs = [image.tag for image in images]
    for image in images:
        if image.base.ref not in refs:
            refs.append(image.base.ref)
    return refs


@dataclass(frozen=True)
class Transfer:
    what: str  # "save", "load", "push", "pull"
    where: str  # archive path, or registry / index file
    images: list[dict]
    seconds: float
    bytes: int | None = None

    def to_json(self) -> dict:
        return {"action": self.what, "where": self.where, "images": self.images, "seconds": round(self.seconds, 1),
                **({"bytes": self.bytes} if self.bytes is not None else {})}


def _describe(images: list[BuiltImage]) -> list[dict]:
    return [{"tag": image.tag, "id": image.info.id, "source": image.info.labels.get(SOURCE_LABEL, "")}
            for image in images]


def save(engine: Engine, images: list[BuiltImage], archive: Path) -> Transfer:
    started = time.monotonic()
    with writing(archive):
        archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(f".{archive.name}.partial-{os.getpid()}")
    refs = with_bases(images)
    log.info("saving %d images (%s) to %s", len(refs), ", ".join(refs), archive)
    try:
        engine.save_images(refs, partial)
        with writing(archive):
            os.replace(partial, archive)  # never a half-written archive under the name a CI uploads
    finally:
        partial.unlink(missing_ok=True)
    return Transfer("save", str(archive), _describe(images), time.monotonic() - started, archive.stat().st_size)


def load(engine: Engine, project: Project, matrix: Matrix, names: list[str], archive: Path,
         options: BuildOptions) -> Transfer:
    if not archive.is_file():
        raise UsageError(f"{archive}: no such image archive",
                         fix="download the artifact 'coldchain images-save' wrote, or pass its path")
    started = time.monotonic()
    loaded = engine.load_images(archive)
    log.info("loaded %s from %s", ", ".join(loaded) or "nothing", archive)
    images = _checked(engine, project, matrix, names, options, str(archive))
    return Transfer("load", str(archive), _describe(images), time.monotonic() - started, archive.stat().st_size)


def push(engine: Engine, images: list[BuiltImage], registry: str, index: Path) -> Transfer:
    """Tag each image (and its base) under the registry, push it, and write the digests a job pulls by."""
    registry = registry.rstrip("/")
    started = time.monotonic()
    entries = {}
    bases = {image.base.ref for image in images}
    for ref in with_bases(images):
        remote = f"{registry}/{ref}"
        engine.tag(_id_of(engine, ref), remote)
        log.info("pushing %s", remote)
        digest = engine.push(remote)
        entries[ref] = {"ref": f"{remote.rsplit(':', 1)[0]}@{digest}", "id": _id_of(engine, ref), "base": ref in bases}
    atomic_write_text(index, json.dumps({"format": INDEX_FORMAT, "registry": registry, "images": entries},
                                        indent=2, sort_keys=True) + "\n")
    return Transfer("push", registry, _describe(images), time.monotonic() - started)


def pull(engine: Engine, project: Project, matrix: Matrix, names: list[str], index: Path,
         options: BuildOptions) -> Transfer:
    entries = read_index(index)
    started = time.monotonic()
    # Bases first: the images are checked against the base this checkout resolves by name.
    for ref, entry in sorted(entries.items(), key=lambda item: (not item[1].get("base"), item[0])):
        pulled = engine.pull_digest(entry["ref"])
        if entry.get("id") and pulled.id != entry["id"]:
            raise ColdchainError(f"{index}: {entry['ref']} is image {pulled.id[:19]}, not the {entry['id'][:19]} "
                                 "that was pushed", fix="the registry changed what the digest names: push again")
        engine.tag(pulled.id, ref)
    images = _checked(engine, project, matrix, names, options, str(index))
    return Transfer("pull", str(index), _describe(images), time.monotonic() - started)


def read_index(index: Path) -> dict[str, dict]:
    try:
        data = json.loads(index.read_text())
        entries = data["images"]
        if data.get("format") != INDEX_FORMAT or not all("@sha256:" in entry["ref"] for entry in entries.values()):
            raise ValueError("not an index of name@digest references")
    except FileNotFoundError:
        raise UsageError(f"{index}: no such file", fix="pass the index 'coldchain images-push' wrote") from None
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise UsageError(f"{index} is not an image index written by 'coldchain images-push' ({error})",
                         fix="pass the JSON file 'coldchain images-push --index FILE' wrote") from None
    return entries


def _checked(engine: Engine, project: Project, matrix: Matrix, names: list[str], options: BuildOptions,
             source: str) -> list[BuiltImage]:
    try:
        return resolve(engine, project, matrix, names, replace(options, build=False))
    except ImageNotAvailable as error:
        error.message = f"{source}: {error.message}"
        raise


def _id_of(engine: Engine, ref: str) -> str:
    info = engine.inspect_image(ref)
    if info is None:
        raise UsageError(f"{ref}: no such image here", fix="build it first ('make images' or 'make drift-test')")
    return info.id
