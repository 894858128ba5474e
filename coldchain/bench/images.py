"""What the kit's own images cost: cold builds, rebuilds with unchanged inputs, the up-to-date check,
sizes. Medians where repeated; nothing here asserts a speed."""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass

from ..config import IMAGES, Project
from ..engine import Engine, ImageInfo
from ..environments.images import BuildOptions, build_image, build_images

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageBenchOptions:
    devices: tuple[str, ...] = ("cpu",)
    cold: bool = True  # also time builds that ignore Docker's layer cache
    repeats: int = 3
    prefix: str = "coldchain"


def _timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def _drop_if_orphaned(engine: Engine, previous: ImageInfo | None) -> None:
    """A cold build makes new layers of everything; the image it replaced is a full copy nobody tags."""
    if previous is None:
        return
    now = engine.inspect_image(previous.id)
    if now is not None and not now.tags:
        engine.remove_image(previous.id)


def bench_images(engine: Engine, project: Project, options: ImageBenchOptions) -> dict:
    results: dict = {}
    for device in options.devices:
        specs = [spec for spec in IMAGES.values() if spec.device == device]
        build_images(engine, project, specs, BuildOptions(prefix=options.prefix))  # make sure they exist
        for spec in specs:
            entry: dict = {}
            if options.cold:
                previous = engine.inspect_image(spec.tag(options.prefix))
                entry["cold_build_s"] = round(_timed(lambda: build_image(
                    engine, project, spec, BuildOptions(prefix=options.prefix, nocache=True))), 1)
                _drop_if_orphaned(engine, previous)
            warm = [_timed(lambda: build_image(engine, project, spec, BuildOptions(prefix=options.prefix, force=True)))
                    for _ in range(options.repeats)]
            up_to_date = [_timed(lambda: build_image(engine, project, spec, BuildOptions(prefix=options.prefix)))
                          for _ in range(options.repeats)]
            info = engine.inspect_image(spec.tag(options.prefix))
            entry.update(warm_rebuild_s=round(statistics.median(warm), 2),
                         up_to_date_check_s=round(statistics.median(up_to_date), 2),
                         size_bytes=info.size if info else None,
                         size_gb=round(info.size / 1e9, 2) if info else None)
            results[spec.name] = entry
            log.info("%s: %s", spec.name, entry)
    return results
