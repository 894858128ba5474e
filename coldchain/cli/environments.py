"""The environment commands: lock, lock-check, wheels, base, images, an image's SBOM, and clean."""

from __future__ import annotations

from .. import options
from ..config import Project
from . import base
from .base import command, emit, main



@main.command("lock")
@options.lock_names
@options.upgrade
@command
def lock_command(project: Project, only: tuple[str, ...], upgrade: bool):
    """Resolve every requirements*.in into its hashed lock (pip-compile). Locks for another Python
    than this host's are resolved inside their base image, under that base's python3."""
    from ..steps.environment import compile_locks

    compile_locks(base.connect, project, only, upgrade)


@main.command("lock-check")
@options.json_output
@command
def lock_check_command(project: Project, as_json: bool):
    """Fail, naming the file, when a lock is stale, unhashed, or disagrees with its partner."""
    from ..steps.environment import lock_summary

    summary = lock_summary(project)
    emit(summary, as_json, "\n".join(f"ok  {v['lock']}  ({v['packages']} pins)" for v in summary.values()))


@main.command("wheels")
@options.lock_names
@command
def wheels_command(project: Project, only: tuple[str, ...]):
    """Fetch and verify the wheels each image lock pins."""
    from ..steps.environment import fetch_wheels

    fetch_wheels(project, only)


@main.command("base")
@options.suite
@options.base_image
@options.no_pull
@options.json_output
@command
def base_command(project: Project, suite: str, base_image: str | None, no_pull: bool, as_json: bool):
    """Make sure the base image exists: pulled where a registry answers, else built locally."""
    from ..steps.environment import base_image as find_base

    resolved = find_base(base.connect(), project, suite, base_image, allow_pull=not no_pull)
    emit(resolved.__dict__, as_json, f"{resolved.ref}  {resolved.image_id}  ({resolved.source}, "
                                     f"Python {resolved.python_version})")


@main.command("images")
@options.image_names
@options.device
@options.prefix
@options.base_image
@options.no_pull
@options.force
@options.verify_images
@options.keep_build_stages
@options.json_output
@command
def images_command(project: Project, images: tuple[str, ...], device: str, prefix: str, base_image: str | None,
                   no_pull: bool, force: bool, verify: bool, keep_build_stages: bool, as_json: bool):
    """Build the train and infer images for a device from their locks; --verify checks their files."""
    from ..steps.environment import ImagesRequest, build_named_images

    request = ImagesRequest(names=images, device=device, prefix=prefix, base_image=base_image, allow_pull=not no_pull,
                            force=force, keep_stages=keep_build_stages, verify=verify)
    results = build_named_images(base.connect(), project, request)
    emit(results, as_json, "\n".join(f"{r['tag']}  {r['id'][:19]}  {r['size'] / 1e9:.2f} GB"
                                     f"{'  (up to date)' if r['reused'] else ''}"
                                     f"{'  (files verified)' if r.get('verified') else ''}" for r in results))


@main.command("sbom")
@options.image_ref
@options.sbom_lock
@command
def sbom_command(project: Project, image: str, lock):
    """Print the CycloneDX SBOM (JSON) that IMAGE carries in its labels, made from the hashed lock it was
    built from; --lock checks it against a lock first. 'images --verify' checks the kit's images."""
    import click

    from ..steps.environment import image_sbom_document

    click.echo(image_sbom_document(base.connect(), image, lock).decode("utf-8"))


@main.command("clean")
@options.prefix
@options.clean_all
@options.superseded
@command
def clean_command(project: Project, prefix: str, everything: bool, superseded: bool):
    """Remove the kit's containers and images (found by label), and build leftovers."""
    from ..steps.clean import CleanRequest, clean

    clean(base.connect(), project, CleanRequest(everything=everything, superseded=superseded))
