"""`coldchain clean`'s removal policy: the kit's containers and images (found by its label) and the
build leftovers; with --all the base images and the wheelhouse too; with --superseded only the
nameless images each rebuild leaves behind. An image that cannot go is reported, not fatal."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass

from ..config import KIT_LABEL, Project
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
        from ..environments.images import remove_superseded

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
