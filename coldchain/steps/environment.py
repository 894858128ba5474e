"""The environment commands on the host (lock, wheels, images): which locks and images a command
names, each lock resolved under the Python it targets, each image's wheels verified, the images
built from their locks."""

from __future__ import annotations

import logging
from typing import Callable

from ..config import BASES, IMAGES, LOCKS, Project
from ..engine import Engine
from ..environments.images import BuildOptions, BuiltImage, build_images

log = logging.getLogger(__name__)


def compile_locks(connect: Callable[[], Engine], project: Project, names: tuple[str, ...], upgrade: bool) -> None:
    """pip-compile each named lock (default: all): on this host where it runs the lock's Python, else in
    the lock's base image (the engine is connected only then)."""
    from ..environments.locks import compile_lock, host_python
    from ..environments.resolver import compile_lock_in_base

    for name in names or list(LOCKS):
        spec = LOCKS[name]
        log.info("resolving %s -> %s", spec.source, spec.lock)
        if spec.python == host_python():
            compile_lock(project, spec, upgrade=upgrade)
        else:
            compile_lock_in_base(connect(), project, spec, upgrade=upgrade)


def fetch_wheels(project: Project, names: tuple[str, ...]) -> None:
    """Fetch and verify the wheels of each named lock (default: every image's)."""
    from ..environments.locks import check_all
    from ..environments.wheelhouse import Wheelhouse

    for name in dict.fromkeys(names or [spec.lock for spec in IMAGES.values()]):
        lock = check_all(project, [name])[name]
        wheels = Wheelhouse(project, BASES[LOCKS[name].base]).ensure(LOCKS[name], lock)
        log.info("%s: %d wheels verified", LOCKS[name].lock, len(wheels))


def build_named_images(engine: Engine, project: Project, names: tuple[str, ...], device: str,
                       options: BuildOptions) -> list[BuiltImage]:
    """The named images, or without names every image for the device."""
    chosen = names or tuple(name for name, spec in IMAGES.items() if spec.device == device)
    return build_images(engine, project, [IMAGES[name] for name in chosen], options)
