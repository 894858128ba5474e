"""`coldchain clean`'s removal policy: the kit's containers and images (found by its label) and the
build leftovers; with --all the base images and the wheelhouse too; with --superseded only what this
checkout no longer uses: the nameless images each rebuild leaves behind, the kit's names on images of
other inputs, and the tags of test sessions that were killed. An image that cannot go is reported, not
fatal."""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass

from ..config import BENCH_IMAGE, IMAGES, KIT_LABEL, TEST_SESSION_PREFIX, ImageSpec, Project
from ..engine import Engine
from ..errors import EngineError

log = logging.getLogger(__name__)
ROLE_LABEL = "io.coldchain.role"  # the kit's own images (not its bases) carry their role


@dataclass(frozen=True)
class CleanRequest:
    everything: bool = False  # --all: base images and the wheelhouse as well
    superseded: bool = False  # only images no tag names any more and no container uses


def clean(engine: Engine, project: Project, request: CleanRequest) -> None:
    if request.superseded:
        from ..environments.images import remove_superseded, untag_stale

        untag_dead_sessions(engine)
        untag_stale(engine, project, kit_specs(project))  # logs each name it takes
        untag_stale_opbuild(engine)
        removed, freed = remove_superseded(engine)
        log.info("removed %d superseded images (%.2f GB)", removed, freed / 1e9)
        return
    removed = engine.remove_containers(KIT_LABEL)
    images = [image for image in engine.list_images(KIT_LABEL) if request.everything or ROLE_LABEL in image.labels]
    gone, kept = 0, []
    for image in images:
        try:
            engine.remove_image(image.id)
            gone += 1
        except EngineError as error:  # in use, or removed by someone else meanwhile: report, go on
            kept.append(f"{image.tags[0] if image.tags else image.id[:19]}: {error.message}")
    shutil.rmtree(project.build_dir, ignore_errors=True)
    if request.everything:
        shutil.rmtree(project.wheelhouse, ignore_errors=True)
    log.info("removed %d containers and %d images", removed, gone)
    for line in kept:
        log.warning("kept %s", line)


def kit_specs(project: Project) -> list[ImageSpec]:
    """Every image the checkout builds under one of the kit's names from its own lock: the kit images,
    the runtimes image and each drift matrix's environments. An adopted model's reference environment
    is left out: its lock travels with the model, not with this checkout."""
    from ..environments.matrix import load_matrix
    from ..errors import ColdchainError

    specs = {spec.tag(): spec for spec in (*IMAGES.values(), BENCH_IMAGE)}
    for path in sorted(project.path("drift").glob("matrix*.toml")):
        try:
            matrix = load_matrix(path)
        except ColdchainError as error:  # a broken matrix is the drift test's to report, not prune's
            log.warning("skipped %s: %s", path, error.message)
            continue
        for env in matrix.envs.values():
            if env.lock_spec is None:
                spec = env.image_spec()
                specs.setdefault(spec.tag(), spec)
    return list(specs.values())


def untag_stale_opbuild(engine: Engine) -> None:
    """The custom-op build image is made from the training image: stale once the kit's training image is
    another one (or none is left under its name)."""
    from ..cache import image_identity
    from ..environments.opbuild import OPBUILD_SPEC

    tag = OPBUILD_SPEC.tag()
    found = engine.inspect_image(tag)
    if found is None or found.labels.get(KIT_LABEL) != "coldchain":
        return
    train = engine.inspect_image(IMAGES["train-cpu"].tag())
    if train is None or found.labels.get("io.coldchain.train.image") != image_identity(train.labels, train.id):
        engine.remove_image(tag)
        log.info("%s was compiled against another training image: name removed", tag)


_SESSION_TAG = re.compile(rf"^{TEST_SESSION_PREFIX}-(\d+)-[0-9a-f]{{6}}-")


def untag_dead_sessions(engine: Engine) -> list[str]:
    """Tags of test sessions whose process is gone: a killed session never ran its cleanup, and its tags
    keep old images (CUDA ones are 5 GB) from ever becoming superseded."""
    taken = []
    for image in engine.list_images(KIT_LABEL):
        for tag in image.tags:
            match = _SESSION_TAG.match(tag)
            if match and not _alive(int(match.group(1))):
                engine.remove_image(tag)
                taken.append(tag)
    if taken:
        log.info("removed %d tags of test sessions that ended without cleaning up", len(taken))
    return taken


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
