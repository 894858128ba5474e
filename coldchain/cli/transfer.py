"""The image-transfer commands, a drift-test shard's images between daemons: images-save,
images-load, images-push, and images-pull."""

from __future__ import annotations

import os
from pathlib import Path

from .. import options
from ..config import Project
from . import base
from .base import command, emit, main


def _selection(matrix_path: Path, model: Path, shard: str | None, costs: Path | None, prefix: str):
    from ..drift.transfer_commands import ImageSelection

    return ImageSelection(model=model, matrix_path=matrix_path, shard=shard, environ=dict(os.environ), costs=costs,
                          prefix=prefix)


def _transferred(result, as_json: bool) -> None:
    data = result.to_json()
    size = f", {result.bytes / 1e9:.2f} GB" if result.bytes is not None else ""
    emit(data, as_json, f"{result.what}: {len(result.images)} images ({result.where}{size}, {result.seconds:.0f} s)\n"
         + "\n".join(f"  {image['tag']}  {image['id'][:19]}" for image in result.images))


@main.command("images-save")
@options.archive_out
@options.image_selection
@command
def images_save_command(project: Project, archive: Path, matrix_path: Path, model: Path, shard: str | None,
                        costs: Path | None, prefix: str, as_json: bool):
    """Write the images a drift-test shard needs (building what is missing) and their bases to one
    archive, for a CI job on another Docker daemon: pass it as an artifact, then images-load it."""
    from ..drift.transfer_commands import save_images

    _transferred(save_images(base.connect, project, _selection(matrix_path, model, shard, costs, prefix), archive),
                 as_json)


@main.command("images-load")
@options.archive_in
@options.image_selection
@command
def images_load_command(project: Project, archive: Path, matrix_path: Path, model: Path, shard: str | None,
                        costs: Path | None, prefix: str, as_json: bool):
    """Load an archive images-save wrote and check every image the shard needs against the inputs this
    checkout builds it from (Dockerfile, lock, scripts, base); refuse, naming what differs, otherwise."""
    from ..drift.transfer_commands import load_images

    _transferred(load_images(base.connect, project, _selection(matrix_path, model, shard, costs, prefix), archive),
                 as_json)


@main.command("images-push")
@options.registry
@options.index_out
@options.image_selection
@command
def images_push_command(project: Project, registry: str, index: Path, matrix_path: Path, model: Path,
                        shard: str | None, costs: Path | None, prefix: str, as_json: bool):
    """Tag the images a shard needs (and their bases) under REGISTRY (host:port[/path]), push them with
    their labels, and write their name@digest references to --index for images-pull."""
    from ..drift.transfer_commands import push_images

    _transferred(push_images(base.connect, project, _selection(matrix_path, model, shard, costs, prefix), registry,
                             index), as_json)


@main.command("images-pull")
@options.index_in
@options.image_selection
@command
def images_pull_command(project: Project, index: Path, matrix_path: Path, model: Path, shard: str | None,
                        costs: Path | None, prefix: str, as_json: bool):
    """Pull by digest the images images-push listed in INDEX, tag them under the kit's names, and check
    those the shard needs against this checkout's inputs, as images-load does."""
    from ..drift.transfer_commands import pull_images

    _transferred(pull_images(base.connect, project, _selection(matrix_path, model, shard, costs, prefix), index),
                 as_json)
