"""Start to first prediction: infer's summary breaks the wait down by phase, host and container, and a
golden check the model passed in this image is kept and used while nothing that decides the numbers
changed. No duration is asserted: only that each phase is measured, that together they are the wait, and
what was skipped and why."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from coldchain.contract import STARTUP_KEY, STARTUP_PHASES
from coldchain.steps.golden_cache import cache_file
from coldchain.steps.pipeline import ensure_images
from conftest import ROOT

pytestmark = pytest.mark.docker


def infer(tiny_chain, run_id, tmp_path, *extra: str) -> tuple[dict, str]:
    completed = subprocess.run([sys.executable, "-m", "coldchain", "infer", "--model", str(tiny_chain / "model"),
                                "--input", str(tiny_chain / "data" / "val"), "--output", str(tmp_path / "p.jsonl"),
                                *extra], cwd=ROOT, env=dict(os.environ, COLDCHAIN_PREFIX=run_id), capture_output=True,
                               text=True, timeout=900, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout), completed.stderr


def test_the_wait_is_broken_down_and_a_kept_golden_check_is_used_only_while_it_applies(
        docker_engine, project, run_id, kit_images, tiny_chain, tmp_path):
    # The image infer will use, asked the way infer asks: a forced rebuild in another test may have
    # moved the tag to a new id since the session fixture built it (same inputs, newer revision label).
    image = ensure_images(docker_engine, project, "infer", "cpu", run_id)
    kept = cache_file(project, tiny_chain / "model", image.info.id,
                      {"name": "tensorflow", "precision": "fp32", "bf16_tolerance": 0.03})
    kept.unlink(missing_ok=True)  # another test (the quick bench) may have run this model already
    first, _ = infer(tiny_chain, run_id, tmp_path)
    assert "cached" not in first["golden"] and first["golden"]["ok"]
    phases = first[STARTUP_KEY]
    assert {key for key, _ in STARTUP_PHASES} <= set(phases), sorted(phases)
    # The phases follow one another, so together they are the wait: no more than the total (ms rounding and
    # /proc's 10 ms ticks aside) and not much less (bench: within 10 ms of 3 s). A phase left unmeasured, or
    # one counted twice, breaks the sum; the phases that certainly take time must have some.
    spent = sum(phases[key] for key, _ in STARTUP_PHASES)
    assert 0.8 * phases["total_s"] <= spent <= phases["total_s"] + 0.05, phases
    assert all(phases[key] > 0 for key in ("host_cli_s", "container_start_s", "interpreter_s", "tensorflow_import_s",
                                           "doctor_s", "golden_s", "first_batch_s")), phases
    assert phases["total_s"] >= phases["tensorflow_import_s"] + phases["golden_s"]

    second, log = infer(tiny_chain, run_id, tmp_path)
    assert second["golden"]["cached"]["verified_at"] and "golden_s" not in second[STARTUP_KEY]
    assert "not run again" in log
    assert {key: second["golden"][key] for key in ("ok", "tensors", "top1")} == \
        {key: first["golden"][key] for key in ("ok", "tensors", "top1")}
    with open(tmp_path / "p.jsonl") as handle:
        assert sum(1 for _ in handle) == first["images"]

    # Asked for the check itself: it runs.
    golden_only, _ = infer(tiny_chain, run_id, tmp_path, "--golden-only")
    assert "cached" not in golden_only["golden"]
    # Kept from other numerics (another oneDNN state, say): it does not apply, the probe runs.
    entry = json.loads(kept.read_text())
    entry["numerics"] = {**entry["numerics"], "onednn": {"enabled": not entry["numerics"]["onednn"]["enabled"]}}
    kept.write_text(json.dumps(entry))
    third, log = infer(tiny_chain, run_id, tmp_path)
    assert "cached" not in third["golden"] and "does not apply (numerics differs)" in log
    # ...and with the cache off, never used.
    fourth, _ = infer(tiny_chain, run_id, tmp_path, "--no-golden-cache")
    assert "cached" not in fourth["golden"]
