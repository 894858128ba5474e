"""A drift-test shard's images between Docker daemons, as the images-* commands ask for it: which
images the job needs (its shard's, or all the matrix needs and the merge job's), then saved to an
archive or pushed to a registry (building what is missing), or loaded or pulled and checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from ..config import Project
from ..engine import Engine
from ..environments.images import BuildOptions
from .commands import choose_shard, load_matrix_at
from ..steps.model_argument import matrix_model


@dataclass(frozen=True)
class ImageSelection:
    model: Path
    matrix_path: Path = Path("drift/matrix.toml")
    shard: str | None = None  # "I/N"; without it the CI's job-matrix variables in `environ` choose
    environ: Mapping[str, str] = field(default_factory=dict)
    costs: Path | None = None
    prefix: str = "coldchain"


def selected_images(project: Project, selection: ImageSelection):
    """(the matrix, the names of the images the job needs): its shard's, or, without a shard, all the
    matrix needs plus the merge job's heatmap image."""
    from .runner import with_model_environment
    from .shards import assign, measured_costs
    from .transfer import image_names

    matrix = with_model_environment(load_matrix_at(project, selection.matrix_path), matrix_model(selection.model))
    chosen = choose_shard(selection.shard, selection.environ)
    cases = list(matrix.cases) if chosen is None else \
        assign(matrix, chosen.total, measured_costs(selection.costs))[chosen.index]
    return matrix, image_names(matrix, cases, merge=chosen is None)


def save_images(connect: Callable[[], Engine], project: Project, selection: ImageSelection, archive: Path):
    from .transfer import resolve, save

    matrix, names = selected_images(project, selection)
    engine = connect()
    return save(engine, resolve(engine, project, matrix, names, BuildOptions(prefix=selection.prefix)), archive)


def push_images(connect: Callable[[], Engine], project: Project, selection: ImageSelection, registry: str,
                index: Path):
    from .transfer import push, resolve

    matrix, names = selected_images(project, selection)
    engine = connect()
    return push(engine, resolve(engine, project, matrix, names, BuildOptions(prefix=selection.prefix)), registry,
                index)


def load_images(connect: Callable[[], Engine], project: Project, selection: ImageSelection, archive: Path):
    """images-load: the archive images-save wrote, loaded and checked against this checkout's inputs."""
    from .transfer import load

    return _receive(load, connect, project, selection, archive)


def pull_images(connect: Callable[[], Engine], project: Project, selection: ImageSelection, index: Path):
    """images-pull: the images images-push listed, pulled by digest and checked like images-load's."""
    from .transfer import pull

    return _receive(pull, connect, project, selection, index)


def _receive(how, connect: Callable[[], Engine], project: Project, selection: ImageSelection, source: Path):
    """Bring the images in, then check them; never build."""
    matrix, names = selected_images(project, selection)
    return how(connect(), project, matrix, names, source, BuildOptions(prefix=selection.prefix, allow_pull=False))
