"""A CycloneDX SBOM of an environment, made from its hashed lock with cyclonedx-bom (cyclonedx-py
requirements): every pinned package with its version, purl and the sha256 of each wheel the lock
allows. Reproducible (no timestamp or serial number), so the same lock gives the same bytes and
a signature over a model directory stays valid when the SBOM is made again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..errors import LockError


def sbom_bytes(lock: Path) -> bytes:
    """The SBOM (JSON) of the hashed lock `lock`."""
    if not lock.is_file():
        raise LockError(f"{lock}: lock not found, no SBOM can be made", fix="run 'make lock'")
    # Validation against the CycloneDX schema costs ~5 s per call; tests/test_sbom.py validates instead.
    command = [sys.executable, "-m", "cyclonedx_py", "requirements", "--output-reproducible", "--of", "JSON",
               "--no-validate", "-o", "-", str(lock)]
    result = subprocess.run(command, capture_output=True, check=False, shell=False)
    if result.returncode != 0 or not result.stdout.strip():
        tail = "\n".join(result.stderr.decode(errors="replace").strip().splitlines()[-10:])
        raise LockError(f"{lock}: cyclonedx-py could not make an SBOM of it", log_tail=tail,
                        fix="check that the lock parses (make lock-check) and that the host venv is current "
                            "(make venv)")
    return result.stdout
