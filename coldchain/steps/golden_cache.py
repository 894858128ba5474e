"""Golden checks kept between `infer` runs. A model that passed its golden probe in an image passes it
again there, bit for bit, as long as nothing that decides the numbers changed; running the probe on
every call cost about a second of each start. The host keeps the passing result per model, manifest,
golden arrays, image id, runtime and precision; the container uses it only after verifying the
model's sha256 and finding its effective numerics (oneDNN as TF decided it, ISA, threads) equal to
those of the kept result, and otherwise runs the probe. `infer --golden-only` always runs it."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

from ..config import Project
from ..contract import GOLDEN_FILE, MANIFEST_FILE, KeptGolden
from ..errors import OutputError
from ..fsutil import atomic_write_text, file_sha256, writing

log = logging.getLogger(__name__)
CACHE_DIR = "golden-checks"  # under build/: 'make clean' forgets them


def _file_sha(path: Path) -> str:
    return file_sha256(path) if path.is_file() else "absent"


def cache_file(project: Project, model_dir: Path, image_id: str, runtime: dict) -> Path:
    """Where the check of this model (its manifest and golden arrays, which name the model's sha256)
    in this image under this runtime and precision is kept."""
    key = json.dumps({"manifest": _file_sha(model_dir / MANIFEST_FILE), "golden": _file_sha(model_dir / GOLDEN_FILE),
                      "image": image_id, "runtime": runtime}, sort_keys=True)
    return project.build_dir / CACHE_DIR / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def remember(path: Path, summary: dict) -> None:
    """Keep a passing, freshly run golden check from infer's summary. Best-effort: the predictions are
    already in place, so a failed write (a full disk) only warns; the next run probes again."""
    kept = KeptGolden.from_summary(summary, verified_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    if kept is None:
        return
    try:
        with writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, kept.to_json())
    except OutputError as error:
        log.warning("the golden check was not kept for the next run (%s); the predictions are written, the "
                    "next infer runs the golden probe again", error.message)
        return
    log.debug("kept the golden check in %s", path)
