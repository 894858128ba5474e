"""Same verdict on every CPU. A CPU with AVX512_VNNI makes TensorFlow turn oneDNN on by itself; the
other class is simulated by forcing TF_ENABLE_ONEDNN_OPTS when the golden is made. Either way every
oneDNN and thread case must end as expected, because expectations compare the case's effective
numerics with the golden's. And each training mode is byte-stable with itself; the portable one
also under both simulated classes (the pair the bench's reproducibility section trains, shared)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from coldchain.bench.reproducibility import SIMULATED_CLASSES
from coldchain.contract import ENV_ONEDNN
from coldchain.environments.matrix import load_matrix
from coldchain.drift.runner import DriftOptions, run_drift_test
from coldchain.steps.pipeline import StepConfig, run_step
from conftest import TINY_TRAIN

pytestmark = pytest.mark.docker
CASES = ("training-env", "infer-cpu", "onednn-on", "onednn-off", "one-thread")


def step(engine, project, run_id, image, name: str, module: str, output: Path, inputs: dict, arguments: tuple,
         environment: dict | None = None) -> None:
    run_step(engine, project, StepConfig(name=name, role="train", module=module, output=output, inputs=inputs,
                                         arguments=arguments, environment=environment or {}, prefix=run_id,
                                         run_id=run_id), image)


@pytest.mark.parametrize("onednn", ["0", "1"], ids=["golden-with-onednn-off", "golden-with-onednn-on"])
def test_onednn_cases_hold_whichever_way_the_golden_was_made(docker_engine, project, run_id, kit_images, tiny_chain,
                                                              tmp_path, onednn):
    model = tmp_path / "model"
    step(docker_engine, project, run_id, kit_images["train"], "freeze", "freeze", model,
         {"/run": tiny_chain / "run"}, ("--run", "/run"), {ENV_ONEDNN: onednn})
    golden = json.loads((model / "manifest.json").read_text())["golden"]["numerics"]
    assert golden["onednn"]["enabled"] is (onednn == "1") and golden["onednn"]["decided_by"] == ENV_ONEDNN
    matrix = load_matrix(project.path("drift/matrix.toml")).select(CASES)
    report = run_drift_test(docker_engine, project, matrix, DriftOptions(model=model, run=tiny_chain / "run",
                                                                         out=tmp_path / "drift", prefix=run_id,
                                                                         run_id=run_id))
    cases = {case["name"]: case for case in report["cases"]}
    assert report["ok"], {name: case["reasons"] for name, case in cases.items() if not case["ok"]}
    # The forced case that matches the golden's state computes like it, to the bit; the other within tolerance.
    same, other = ("onednn-off", "onednn-on") if onednn == "0" else ("onednn-on", "onednn-off")
    assert cases[same]["resolved_expectation"] == "bit-exact" and cases[same]["outcome"] == "bit-exact"
    assert cases[other]["resolved_expectation"] == "pass"
    assert any("oneDNN enabled" in line for line in cases[other]["numerics_differences"])
    assert cases["one-thread"]["numerics"]["threads_effective"] == [1, 1]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_same_bytes(first: tuple[Path, Path], second: tuple[Path, Path]) -> None:
    """(run, model) twice: every checkpoint file and the frozen graph, byte for byte."""
    (first_run, first_model), (second_run, second_model) = first, second
    checkpoint = sorted(path.name for path in first_run.glob("model.ckpt-*"))
    assert checkpoint and checkpoint == sorted(path.name for path in second_run.glob("model.ckpt-*"))
    for name in checkpoint:
        assert digest(first_run / name) == digest(second_run / name), name
    assert digest(first_model / "model.pb") == digest(second_model / "model.pb")


def test_deterministic_training_gives_the_same_bytes_twice(docker_engine, project, run_id, kit_images, tiny_chain,
                                                           tmp_path):
    runs = []
    for index in range(2):
        run, model = tmp_path / f"run{index}", tmp_path / f"model{index}"
        step(docker_engine, project, run_id, kit_images["train"], "train", "train", run, {"/data": tiny_chain / "data"},
             ("--data", "/data", "--numerics", "deterministic", *TINY_TRAIN))
        step(docker_engine, project, run_id, kit_images["train"], "freeze", "freeze", model, {"/run": run},
             ("--run", "/run"))
        numerics = json.loads((run / "config.json").read_text())["numerics"]
        assert numerics["mode"] == "deterministic" and numerics["threads_effective"] == [1, 1]
        runs.append((run, model))
    assert_same_bytes(*runs)


def test_portable_training_gives_the_same_bytes_under_both_simulated_cpu_classes(quick_reproducibility):
    """The portable pair `make bench --quick` trains (the session's one): oneDNN forced off with its ISA
    capped at AVX2 for one, forced on for the other; portable mode overrides both."""
    options, _ = quick_reproducibility
    runs = [options.run_and_model("portable", simulated) for simulated in SIMULATED_CLASSES]
    assert {environment[ENV_ONEDNN] for environment in SIMULATED_CLASSES.values()} == {"0", "1"}
    for run, _ in runs:
        numerics = json.loads((run / "config.json").read_text())["numerics"]
        assert numerics["mode"] == "portable"
        assert numerics["onednn"]["enabled"] is False and numerics["onednn"]["max_cpu_isa"] == "AVX2"
        assert numerics["threads_effective"] == [2, 2]
    assert_same_bytes(*runs)
