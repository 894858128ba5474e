"""Images built only from their lock, base and verified wheelhouse (train, infer, CUDA, drift, bench),
and the one rule that decides whether an image of the same inputs can be reused instead."""

from __future__ import annotations

import logging
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from .bases import ResolvedBase, resolve_base
from ..config import BASES, KIT_LABEL, PLATFORM_LABEL, ImageSpec, Project
from .context import BuildContext
from .files_record import label_with_record
from .image_sbom import SBOM_FORMAT, SBOM_FORMAT_LABEL, sbom_labels
from ..engine import Engine, ImageInfo
from ..errors import BuildError, ImageNotAvailable
from ..fsutil import writing
from ..owner import Owner
from .locks import check_all, check_fresh
from .wheelhouse import Wheelhouse

log = logging.getLogger(__name__)
CONTAINER_SCRIPTS = "scripts/incontainer"


@dataclass(frozen=True)
class BuildOptions:
    prefix: str = "coldchain"
    base_image: str | None = None  # an explicit base; otherwise chosen automatically
    allow_pull: bool = True
    force: bool = False  # build even when an image of the same inputs exists
    nocache: bool = False  # ignore Docker's layer cache too (cold-build benchmarks)
    # Keep the install stage (wheels + a second venv): faster rebuilds after editing scripts/,
    # at 2.2 GB per CPU lock and 7.6 GB per CUDA lock of disk.
    keep_stages: bool = False
    # False: use only images that exist (loaded from an archive, pulled); a missing or different one
    # is an error naming what differs, never a build.
    build: bool = True


@dataclass(frozen=True)
class BuiltImage:
    spec: ImageSpec
    tag: str
    info: ImageInfo
    base: ResolvedBase
    reused: bool


def git_revision(root: Path) -> str:
    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False, shell=False)
        return result.stdout.strip() if result.returncode == 0 else ""

    commit = git("rev-parse", "HEAD") or "unknown"
    return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def image_labels(spec: ImageSpec, lock, base: ResolvedBase, revision: str) -> dict[str, str]:
    lock_spec = spec.locked
    # A lock that travels with a model is named by its file name: where it lies is not an input.
    lock_file = Path(lock_spec.lock).name if Path(lock_spec.lock).is_absolute() else lock_spec.lock
    return {
        "org.opencontainers.image.title": f"coldchain-{spec.role}",
        "org.opencontainers.image.description": f"coldchain {spec.role} image ({spec.device})",
        "org.opencontainers.image.version": __version__,
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.base.name": base.ref,
        "org.opencontainers.image.base.digest": base.image_id,
        KIT_LABEL: "coldchain",
        "io.coldchain.role": spec.role,
        "io.coldchain.device": spec.device,
        "io.coldchain.lock.file": lock_file,
        "io.coldchain.lock.sha256": lock.sha256,
        "io.coldchain.tensorflow.version": lock.version("tensorflow") or "",
        "io.coldchain.numpy.version": lock.version("numpy") or "",
        "io.coldchain.python.version": base.python_version,
        PLATFORM_LABEL: BASES[spec.base].platform,
        **({"io.coldchain.drift.env": spec.env} if spec.env else {}),
        SBOM_FORMAT_LABEL: SBOM_FORMAT,  # the SBOM itself is added after the build, with the file record's label
    }


# The commit that built an image is recorded, but a new commit that changed no input (the context
# fingerprint covers Dockerfile, lock, wheels and scripts) does not make a new image.
NOT_AN_INPUT = frozenset({"org.opencontainers.image.revision"})


def same_inputs(found: dict[str, str], wanted: dict[str, str]) -> bool:
    return all(found.get(key) == value for key, value in wanted.items() if key not in NOT_AN_INPUT)


CONTEXT_LABEL = "io.coldchain.context.sha256"
# Dockerfile, lock and scripts: every input but the wheels, which the lock's hashes already fix. An
# image is found by it before any wheel is fetched or hashed, so a job that loaded or pulled its
# images needs no wheelhouse, and a command that finds its image does not hash a GB of wheels.
SOURCE_LABEL = "io.coldchain.source.sha256"


def find_same_inputs(engine: Engine, tag: str, labels: dict[str, str], key: str = CONTEXT_LABEL) -> ImageInfo | None:
    """The image under `tag`, or any other image built from exactly these inputs (another prefix,
    an earlier commit), so that a test session or a new clone tags it instead of building again."""
    existing = engine.inspect_image(tag)
    if existing is not None and same_inputs(existing.labels, labels):
        return existing
    twins = [info for info in engine.list_images(f"{key}={labels[key]}") if same_inputs(info.labels, labels)]
    return min(twins, key=lambda info: info.id) if twins else None


# What a differing label means, in the user's words.
LABEL_MEANINGS = {
    SOURCE_LABEL: "its Dockerfile, lock or scripts/incontainer",
    CONTEXT_LABEL: "its build context",
    "io.coldchain.lock.sha256": "its lock",
    "org.opencontainers.image.base.digest": "its base image",
    "io.coldchain.python.version": "its Python",
    "io.coldchain.tensorflow.version": "its TensorFlow",
    "io.coldchain.train.image": "the training image it was compiled against",
    SBOM_FORMAT_LABEL: "its SBOM label (built before images carried one)",
}


def not_available(engine: Engine, tag: str, wanted: dict[str, str]) -> ImageNotAvailable:
    found = engine.inspect_image(tag)
    if found is None:
        return ImageNotAvailable(f"{tag}: no image of this checkout's inputs is here, and building was not allowed",
                                 image=tag, fix="load or pull the images made from this same commit, or let this "
                                                "job build its own (drop the load or pull step)")
    differ = [key for key, value in wanted.items() if key not in NOT_AN_INPUT and found.labels.get(key) != value]
    named = sorted({LABEL_MEANINGS.get(key, key) for key in differ})
    made_by = found.labels.get("org.opencontainers.image.revision", "an unknown commit")
    return ImageNotAvailable(f"{tag} ({found.id[:19]}, built by commit {made_by}) was built from other inputs than "
                             f"this checkout's: {', '.join(named)} differ", image=tag,
                             fix="make the archive or push from the same commit as this job (its images carry "
                                 "the inputs they were built from), or let this job build its own")


def _reuse(engine: Engine, tag: str, labels: dict[str, str], key: str) -> ImageInfo | None:
    reusable = find_same_inputs(engine, tag, labels, key)
    if reusable is None:
        return None
    if tag not in reusable.tags:
        engine.tag(reusable.id, tag)
        reusable = engine.inspect_image(tag) or reusable
    log.info("%s is up to date (%s)", tag, reusable.id[:19])
    return reusable


def _build_log(name: str):
    def sink(line: str) -> None:
        # Step lines show progress at the default level; the rest of the build log is -v.
        log.log(logging.INFO if line.startswith("Step ") else logging.DEBUG, "%s | %s", name, line)
    return sink


def build_images(engine: Engine, project: Project, specs: list[ImageSpec], options: BuildOptions) -> list[BuiltImage]:
    bases: dict[str, ResolvedBase] = {}
    built = []
    for spec in specs:
        if spec.base not in bases:
            bases[spec.base] = resolve_base(engine, project, BASES[spec.base], options.base_image,
                                            allow_pull=options.allow_pull)
        built.append(build_image(engine, project, spec, options, bases[spec.base]))
    return built


def ensure_image(engine: Engine, project: Project, spec: ImageSpec, options: BuildOptions) -> BuiltImage:
    """The one image `spec` names: found where its inputs are unchanged, built otherwise."""
    (built,) = build_images(engine, project, [spec], options)
    return built


@dataclass(frozen=True)
class PlannedImage:
    """What an image must be built from, decided before any wheel is fetched: its labels name the
    inputs (SOURCE_LABEL among them), so an image found or loaded elsewhere can be checked against it."""

    spec: ImageSpec
    tag: str
    lock: object  # locks.Lock
    base: ResolvedBase
    context: BuildContext  # without the wheels
    lock_name: str
    labels: dict


def plan_image(engine: Engine, project: Project, spec: ImageSpec, options: BuildOptions,
               base: ResolvedBase | None = None) -> PlannedImage:
    lock_spec = spec.locked
    # A lock outside LOCKS has no partner it must agree with; its freshness and hashes still count.
    lock = check_fresh(project, lock_spec) if spec.lock_spec else check_all(project, [spec.lock])[spec.lock]
    base = base or resolve_base(engine, project, BASES[spec.base], options.base_image, allow_pull=options.allow_pull)
    context, lock_name = source_context(project, spec)
    labels = image_labels(spec, lock, base, git_revision(project.root))
    labels[SOURCE_LABEL] = context.fingerprint()
    return PlannedImage(spec, spec.tag(options.prefix), lock, base, context, lock_name, labels)


def source_context(project: Project, spec: ImageSpec) -> tuple[BuildContext, str]:
    """The build context without the wheels (Dockerfile, lock, scripts/incontainer), whose fingerprint
    is an image's SOURCE_LABEL; and the name the lock has in it."""
    lock_spec = spec.locked
    context = BuildContext()
    context.add_file(spec.dockerfile, project.path(spec.dockerfile))
    # A lock that travels with a model lies outside the project: it enters the context under a fixed name.
    lock_name = f"locks/{lock_spec.name}.lock" if Path(lock_spec.lock).is_absolute() else lock_spec.lock
    context.add_file(lock_name, project.path(lock_spec.lock))
    context.add_tree(CONTAINER_SCRIPTS, project.path(CONTAINER_SCRIPTS))
    return context, lock_name


def untag_stale(engine: Engine, project: Project, specs: list[ImageSpec]) -> list[str]:
    """Take the kit's own names (coldchain-*) from images that this checkout would not build: their
    Dockerfile, lock or scripts/incontainer differ from these files. Nothing rebuilds an image under
    that name until someone asks for it (a CUDA image only in the tests), so without this the old one
    keeps 5 GB for good; untagged, it goes with the superseded ones. The tags taken, in order."""
    taken = []
    for spec in specs:
        tag = spec.tag()
        found = engine.inspect_image(tag)
        if found is None or found.labels.get(KIT_LABEL) != "coldchain":
            continue
        try:
            current = source_context(project, spec)[0].fingerprint()
        except OSError as error:  # a lock this checkout no longer has: nothing to compare with, keep it
            log.debug("kept %s: %s", tag, error)
            continue
        if found.labels.get(SOURCE_LABEL) != current:
            engine.remove_image(tag)
            taken.append(tag)
            log.info("%s (%s, %.2f GB) was built from another Dockerfile, lock or scripts/incontainer than "
                     "this checkout's: name removed", tag, found.id[:19], found.size / 1e9)
    return taken


def build_image(engine: Engine, project: Project, spec: ImageSpec, options: BuildOptions,
                base: ResolvedBase | None = None) -> BuiltImage:
    plan = plan_image(engine, project, spec, options, base)
    if not (options.force or options.nocache):
        reusable = _reuse(engine, plan.tag, plan.labels, SOURCE_LABEL)
        if reusable is not None:
            return BuiltImage(spec, plan.tag, reusable, plan.base, reused=True)
    if not options.build:
        raise not_available(engine, plan.tag, plan.labels)
    lock_spec, lock, base, lock_name = spec.locked, plan.lock, plan.base, plan.lock_name
    context = BuildContext(dict(plan.context.files), dict(plan.context.blobs))
    base_spec = BASES[spec.base]
    wheels = Wheelhouse(project, base_spec).ensure(lock_spec, lock)
    known = {}
    for wheel in wheels:
        arcname = f"wheels/{wheel.path.name}"
        context.add_file(arcname, wheel.path)
        known[arcname] = wheel.sha256  # hashed while verifying against the lock; not read twice

    buildargs = {
        "BASE_IMAGE": base.image_id,
        "LOCK": lock_name,
        "DEVICE": spec.device,
        "EXPECT_PYTHON": base_spec.python,
        "EXPECT_TENSORFLOW": lock.version("tensorflow") or "",
        "EXPECT_NUMPY": lock.version("numpy") or "",
        "EXPECT_MACHINE": base_spec.machine,
    }
    return build_context(engine, project, BuildRequest(spec=spec, tag=plan.tag, context=context, labels=plan.labels,
                                                       buildargs=buildargs, fingerprint_files=known, base=base,
                                                       description=f"{lock_spec.lock} on {base.ref} ({len(wheels)} "
                                                                   "wheels)", hint_lock=lock_spec.lock,
                                                       lock=project.path(lock_spec.lock)), options)


@dataclass(frozen=True)
class BuildRequest:
    """One image to make from a build context, unless an image of the same inputs exists."""

    spec: ImageSpec
    tag: str
    context: BuildContext
    labels: dict
    buildargs: dict
    base: ResolvedBase
    description: str
    fingerprint_files: dict = None  # arcname -> known sha256 (wheels hashed while verifying)
    hint_lock: str = ""
    lock: Path | None = None  # the hashed lock it installs: its SBOM goes into the image's labels


def build_context(engine: Engine, project: Project, request: BuildRequest, options: BuildOptions) -> BuiltImage:
    labels = dict(request.labels)
    labels[CONTEXT_LABEL] = request.context.fingerprint(request.fingerprint_files)
    tag = request.tag
    if not (options.force or options.nocache):
        reusable = _reuse(engine, tag, labels, CONTEXT_LABEL)
        if reusable is not None:
            return BuiltImage(request.spec, tag, reusable, request.base, reused=True)
    if not options.build:
        raise not_available(engine, tag, labels)
    with writing(project.build_dir):
        project.build_dir.mkdir(parents=True, exist_ok=True)
    previous = engine.inspect_image(tag)
    # Made before the build, so a lock cyclonedx-py cannot read fails before minutes of building.
    finishing = {**labels, **(sbom_labels(request.lock) if request.lock else {})}
    with tempfile.TemporaryDirectory(dir=project.build_dir, prefix=f"context-{request.spec.name}-{Owner.current().mark}-") as tmp:
        tarball = Path(tmp) / "context.tar"
        with writing(tarball):
            request.context.write(tarball)
        _warn_if_short_of_disk(engine, tag, tarball.stat().st_size)
        log.info("building %s from %s", tag, request.description)
        try:
            info = engine.build(tarball, dockerfile=request.spec.dockerfile, buildargs=request.buildargs, labels=labels,
                                tag=tag, log=_build_log(request.spec.name), nocache=options.nocache,
                                keep_stages=options.keep_stages, platform=BASES[request.spec.base].platform)
            info = label_with_record(engine, info, tag, finishing)
        except BuildError as error:
            error.fix = error.fix or _hint(error.log_tail or "", request.hint_lock)
            if "DO NOT MATCH THE HASHES" in (error.log_tail or ""):
                error.fix = (f"a wheel does not match {request.hint_lock}; if you edited the lock, run 'make lock', "
                             "otherwise delete the wheel from wheelhouse/ and rerun")
            raise
    log.info("built %s (%s, %.2f GB)", tag, info.id[:19], info.size / 1e9)
    if previous is not None and previous.id != info.id and previous.labels.get(KIT_LABEL) == "coldchain":
        log.info("%s replaces %s (%.2f GB), which keeps no name; 'make prune' removes such images",
                 tag, previous.id[:19], previous.size / 1e9)
    return BuiltImage(request.spec, tag, info, request.base, reused=False)


# Sending the context, the install stage's copy of the wheels, the venv they unpack to (wheels are
# compressed) and the final stage's copy of it: an estimate of the build's peak, in context sizes.
BUILD_DISK_FACTOR = 5


def _warn_if_short_of_disk(engine: Engine, tag: str, context_bytes: int) -> None:
    """Only a warning: Docker's layer cache can make the build need far less than the estimate."""
    space = engine.disk_free()
    need = BUILD_DISK_FACTOR * context_bytes
    if space is not None and space.free < need:
        log.warning("building %s may need about %.1f GB of disk where Docker keeps images (%s) and only %.1f GB "
                    "is free; if it fails, 'make prune' removes the kit's superseded images, 'make clean' all "
                    "of them", tag, need / 1e9, space.path,
                    space.free / 1e9)


def remove_superseded(engine: Engine) -> tuple[int, int]:
    """Remove the kit's images that no tag names any more (each edit of the scripts or a lock leaves
    one of 2 to 5 GB behind) and that no container uses; (how many, bytes). Not done by the builds
    themselves: another checkout's job on the same daemon may still be about to run one by its id,
    so it is asked for, like 'docker image prune'."""
    removed = freed = 0
    for image in engine.list_images(KIT_LABEL):
        if not image.tags and engine.remove_unused_image(image.id):
            removed, freed = removed + 1, freed + image.size
            log.info("removed %s (%.2f GB), superseded", image.id[:19], image.size / 1e9)
    return removed, freed


def _hint(log_tail: str, lock_file: str) -> str:
    if "environment check failed" in log_tail and lock_file:
        return f"the image's environment does not match {lock_file}; see the check's message above"
    return "read the log tail; the failing step is the last 'Step' line"
