"""`coldchain sign` and `coldchain verify`: a model directory's signature on its own."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from .. import options
from ..config import Project
from .base import command, main

log = logging.getLogger("coldchain")


@main.command("sign")
@options.model_argument
@options.sign_key_required
@command
def sign_command(project: Project, model: Path, sign_key: Path):
    """Sign MODEL (a model directory) with an elliptic-curve private key: model.sig in it covers every
    other file (model, manifest, golden, labels, environment, op libraries, conversions). Offline."""
    from ..steps.signing import sign_directory

    click.echo(sign_directory(model, sign_key))


@main.command("verify")
@options.model_argument
@options.trust_required
@command
def verify_command(project: Project, model: Path, trust: tuple[Path, ...]):
    """Verify MODEL's model.sig against trusted public keys or certificates; exit 2 naming the file that
    is unsigned, changed, added or missing, or the untrusted signature."""
    from ..steps.signing import verify_directory

    click.echo(verify_directory(model, trust).status)
