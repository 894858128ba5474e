"""What the host adds to a model directory that freeze, adopt or reexport wrote, before it is renamed
into place: the SBOM of the environment that made it (environment/sbom.cdx.json), then, with
--sign-key, model.sig over every file; a model.sig copied from a source directory is dropped (it no
longer matches what was written)."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Callable

from ..contract import ENVIRONMENT_DIR, SBOM_FILE, SIGNATURE_FILE
from ..environments.sbom import sbom_bytes
from ..fsutil import atomic_write_bytes
from .signing import sign_directory

log = logging.getLogger(__name__)


def finish_model(directory: Path, *, lock: Path | None, sign_key: Path | None) -> None:
    (directory / SIGNATURE_FILE).unlink(missing_ok=True)
    if lock is not None:
        (directory / ENVIRONMENT_DIR).mkdir(exist_ok=True)
        atomic_write_bytes(directory / ENVIRONMENT_DIR / SBOM_FILE, sbom_bytes(lock))
    if sign_key is not None:
        sign_directory(directory, sign_key)
        log.info("signed %s with %s (%s)", directory.name, sign_key, SIGNATURE_FILE)


def model_finisher(lock: Path | None, sign_key: Path | None) -> Callable[[Path], None]:
    """StepConfig.finish for a step that writes a model directory; `lock`: its environment's lock."""
    return partial(finish_model, lock=lock, sign_key=sign_key)
