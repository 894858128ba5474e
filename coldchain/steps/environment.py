"""The environment commands on the host (lock, lock-check, wheels, base, images): which locks and
images a command names, each lock resolved under the Python it targets and checked, each image's
wheels verified, the base image found, the images built from their locks."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from ..config import BASES, IMAGES, LOCKS, Project
from ..engine import Engine
from ..environments.images import BuildOptions, build_images

log = logging.getLogger(__name__)


def compile_locks(connect: Callable[[], Engine], project: Project, names: tuple[str, ...], upgrade: bool) -> None:
    """pip-compile each named lock (default: all): on this host where it runs the lock's Python, else in
    the lock's base image (the engine is connected only then)."""
    from ..environments.locks import compile_lock
    from ..environments.resolver import compile_lock_in_base, resolved_in_base

    for name in names or list(LOCKS):
        spec = LOCKS[name]
        log.info("resolving %s -> %s", spec.source, spec.lock)
        if resolved_in_base(spec):
            compile_lock_in_base(connect(), project, spec, upgrade=upgrade)
        else:
            compile_lock(project, spec, upgrade=upgrade)


def fetch_wheels(project: Project, names: tuple[str, ...]) -> None:
    """Fetch and verify the wheels of each named lock (default: every image's)."""
    from ..environments.locks import check_all
    from ..environments.wheelhouse import Wheelhouse

    for name in dict.fromkeys(names or [spec.lock for spec in IMAGES.values()]):
        lock = check_all(project, [name])[name]
        wheels = Wheelhouse(project, BASES[LOCKS[name].base]).ensure(LOCKS[name], lock)
        log.info("%s: %d wheels verified", LOCKS[name].lock, len(wheels))


def lock_summary(project: Project) -> dict:
    """Every lock checked (stale, unhashed, disagreeing with its partner: refused, naming the file), as
    {name: its file, sha256 and number of pins}."""
    from ..environments.locks import check_all

    return {name: {"lock": str(lock.path.relative_to(project.root)), "sha256": lock.sha256,
                   "packages": len(lock.pins)} for name, lock in check_all(project).items()}


def base_image(engine: Engine, project: Project, suite: str, image: str | None, allow_pull: bool):
    """The suite's base image (or `image` instead): pulled where a registry answers, else built locally."""
    from ..environments.bases import resolve_base

    return resolve_base(engine, project, BASES[suite], image, allow_pull=allow_pull)


@dataclass(frozen=True)
class ImagesRequest:
    names: tuple[str, ...] = ()  # none: every image for the device
    device: str = "cpu"
    prefix: str = "coldchain"
    base_image: str | None = None  # instead of choosing one
    allow_pull: bool = True
    force: bool = False  # rebuild even when an image of the same inputs exists, without the layer cache
    keep_stages: bool = False
    verify: bool = False  # then re-hash each image's files against its build-time record


def build_named_images(engine: Engine, project: Project, request: ImagesRequest) -> list[dict]:
    """Build (or find up to date) the images the request names; what each is, as data. With `verify`,
    each image's files are then re-hashed in it; any difference raises ImageCorrupt (exit 20)."""
    from ..environments.files_record import raise_if_corrupt

    chosen = request.names or tuple(name for name, spec in IMAGES.items() if spec.device == request.device)
    # A forced rebuild skips Docker's layer cache too: a layer corrupted on disk would survive a cached one.
    options = BuildOptions(prefix=request.prefix, base_image=request.base_image, allow_pull=request.allow_pull,
                           force=request.force, nocache=request.force, keep_stages=request.keep_stages)
    results = [{"image": built.spec.name, "tag": built.tag, "id": built.info.id, "size": built.info.size,
                "reused": built.reused, "base": built.base.ref, "labels": built.info.labels}
               for built in build_images(engine, project, [IMAGES[name] for name in chosen], options)]
    if request.verify:
        checks = []
        for result in results:
            log.info("verifying the files and the SBOM of %s", result["tag"])
            checks.append(_verify(engine, project, result))
            log.info("%s: %s", result["tag"], "files as recorded, SBOM as its lock" if checks[-1].files_ok else
                     f"{len(checks[-1].mismatches)} differ from the record or the lock")
            result["verified"] = checks[-1].files_ok
        raise_if_corrupt(checks)
    return results


def _verify(engine: Engine, project: Project, result: dict):
    """The image's files against their record, and its SBOM (labels) against the lock it was built from."""
    from dataclasses import replace

    from ..environments.files_record import verify_image
    from ..environments.image_sbom import read_lock, sbom_mismatches

    files = verify_image(engine, result["tag"])
    info = engine.inspect_image(result["tag"])
    if info is None:
        return files
    sbom = sbom_mismatches(info, result["tag"], read_lock(project.path(IMAGES[result["image"]].locked.lock)))
    return replace(files, files_ok=files.files_ok and not sbom, mismatches=files.mismatches + sbom)


def image_sbom_document(engine: Engine, ref: str, lock=None) -> bytes:
    """The CycloneDX SBOM (JSON) the image `ref` carries in its labels; with `lock` (a path), first checked
    against that lock: any difference raises ImageCorrupt (exit 20)."""
    from ..environments.image_sbom import image_sbom, read_lock, sbom_mismatches
    from ..errors import ImageCorrupt, UsageError

    info = engine.inspect_image(ref)
    if info is None:
        raise UsageError(f"{ref}: no such image on this Docker daemon",
                         fix="name an image 'docker images' lists (e.g. coldchain-infer:cpu), or build it: "
                             "'coldchain images'")
    document = image_sbom(info, ref)
    if lock is not None:
        differ = sbom_mismatches(info, ref, read_lock(lock))
        if differ:
            raise ImageCorrupt(f"{ref}: its SBOM is not {lock}'s: {'; '.join(differ[:5])}"
                               f"{f' (+{len(differ) - 5} more)' if len(differ) > 5 else ''}",
                               fix="rebuild the image from this lock ('coldchain images --force', or the command "
                                   "that made it), or name the lock it was built from")
    return document
