"""How a drift-test shard on another Docker daemon gets its images, measured both ways for one shard
of the default matrix: building them itself (no layer cache, wheelhouse present), or receiving them
(docker save, load; push to and pull by digest from a registry on this machine). Before each load or
pull the images are removed, so every layer is written again, as on a fresh machine."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ..config import Project
from ..environments.matrix import load_matrix
from ..drift.variants import with_model_environment
from ..drift.shards import assign, parse_shard
from ..drift.transfer import image_names, load, pull, push, resolve, save
from ..engine import Engine
from ..engine.registry import BINARY, local_registry
from ..environments.images import BuildOptions, BuiltImage
from ..errors import EngineError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TransferBenchOptions:
    model: Path
    out: Path
    shard: str = "2/3"
    prefix: str = "coldchain"
    rebuild: bool = True  # also time building the shard's images from scratch (minutes per image)


def _drop(engine: Engine, images: list[BuiltImage]) -> int:
    """Remove the images (every tag); an image a container or another image still holds stays."""
    dropped = 0
    for image in images:
        try:
            engine.remove_image(image.info.id)
            dropped += 1
        except EngineError as error:
            log.warning("bench: kept %s: %s", image.tag, error.message)
    return dropped


def bench_transfer(engine: Engine, project: Project, options: TransferBenchOptions) -> dict:
    matrix = with_model_environment(load_matrix(project.path("drift/matrix.toml")), options.model)
    shard = parse_shard(options.shard)
    cases = assign(matrix, shard.total, {})[shard.index]
    names = image_names(matrix, cases, merge=False)
    build = BuildOptions(prefix=options.prefix)
    built = resolve(engine, project, matrix, names, build)
    result: dict = {"shard": str(shard), "images": [image.tag for image in built],
                    "image_gb": round(sum({image.info.id: image.info.size for image in built}.values()) / 1e9, 2)}
    if options.rebuild:
        started = time.monotonic()
        built = resolve(engine, project, matrix, names, replace(build, nocache=True))
        result["build_s"] = round(time.monotonic() - started, 1)
        result["build_note"] = "no layer cache, the wheelhouse present (a cold job also downloads the wheels)"
    options.out.mkdir(parents=True, exist_ok=True)
    archive = options.out / "images.tar"
    try:
        saved = save(engine, built, archive)
        result.update(save_s=round(saved.seconds, 1), archive_gb=round(saved.bytes / 1e9, 2))
        result["dropped_before_load"] = _drop(engine, built)
        loaded = load(engine, project, matrix, names, archive, replace(build, allow_pull=False))
        result["load_s"] = round(loaded.seconds, 1)
    finally:
        archive.unlink(missing_ok=True)
    if shutil.which(BINARY) is None:
        result["registry"] = f"not measured: no {BINARY} (scripts/ensure-registry.sh installs it)"
        return result
    with local_registry(options.out / "registry") as registry:
        index = options.out / "images.json"
        pushed = push(engine, built, registry, index)
        result["push_s"] = round(pushed.seconds, 1)
        for ref in [f"{registry}/{image.tag}" for image in built] + [f"{registry}/{image.base.ref}" for image in built]:
            engine.remove_image(ref)
        result["dropped_before_pull"] = _drop(engine, built)
        pulled = pull(engine, project, matrix, names, index, replace(build, allow_pull=False))
        result["pull_s"] = round(pulled.seconds, 1)
        result["registry"] = "docker-registry on 127.0.0.1 (plain HTTP, same machine: no network in the time)"
    shutil.rmtree(options.out / "registry", ignore_errors=True)
    return result
