"""What one drift-test run is asked to do (DriftOptions), shared by the parts that do it, and how
many case containers run at once by default."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .shards import Shard


@dataclass(frozen=True)
class DriftOptions:
    model: Path  # the default variant: make freeze's (or adopt's) model directory
    run: Path | None  # the training run freeze variants are made from; None for an adopted model
    out: Path  # report directory; variants go to out/models
    prefix: str = "coldchain"
    run_id: str = "coldchain"
    jobs: int = 1
    memory: str = "8g"
    shard: Shard | None = None  # run only this shard's cases (drift.shards)
    costs: Path | None = None  # an earlier report whose measured case times balance the shards
    isolate: bool = False  # one container per case, even where cases could share one
    allowed_ops: tuple[str, ...] = ()  # --allow-op: ops every case's graph scan lets through
    # --trust: what the host verified (steps.signing.container_environment), for the containers that read
    # the signed model directory itself (the default variant's probes, re-exports made from it).
    signed_environment: tuple[tuple[str, str], ...] = ()


def default_jobs() -> int:
    """One TF process already uses every core for a batch; run two at once only with four or more."""
    return max(1, (os.cpu_count() or 1) // 2) if (os.cpu_count() or 1) >= 4 else 1
