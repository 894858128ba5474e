"""The doctor's verdict comes from the runtime it runs in. Broken graphs are built here with
TensorFlow's own APIs and GraphDef protos (tests/doctor_graphs), then, in two runtimes of the drift
matrix, the doctor's exit code is held against what that runtime really does with each graph
(tests/doctor_graphs/behaviour.py: import, run, batch invariance; no kit code involved)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coldchain.config import KIT_LABEL
from coldchain.environments.matrix import load_matrix
from coldchain.engine import Mount, RunSpec
from coldchain.environments.images import BuildOptions, build_images
from coldchain.steps.diagnose import DoctorRequest, run_doctor
from conftest import ROOT

pytestmark = pytest.mark.docker
GRAPHS = ROOT / "tests" / "doctor_graphs"
RUNTIMES = ("infer-cpu", "tf2.7-py3.9")


@pytest.fixture(scope="session")
def graphs(docker_engine, kit_images, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("doctor-graphs")
    out.chmod(0o777)
    result = docker_engine.run(RunSpec(image=kit_images["train"].info.id, command=("python", "/t/make_graphs.py", "/out"),
                                       mounts=(Mount(GRAPHS, "/t"), Mount(out, "/out", read_only=False)),
                                       labels={KIT_LABEL: "coldchain"}, timeout_s=600))
    assert result.exit_code == 0, result.stderr[-3000:]
    for path in out.iterdir():
        path.chmod(0o644)
    return out


@pytest.fixture(scope="session")
def runtimes(docker_engine, project, run_id, session_tags):
    matrix = load_matrix(project.path("drift/matrix.toml"))
    specs = [matrix.envs[name].image_spec() for name in RUNTIMES]
    session_tags.extend(spec.tag(run_id) for spec in specs)
    return dict(zip(RUNTIMES, build_images(docker_engine, project, specs, BuildOptions(prefix=run_id))))


def behaviour(engine, image, graphs: Path, soft: bool) -> dict:
    result = engine.run(RunSpec(image=image.info.id, command=("python", "/t/behaviour.py", "/g") + (("--soft",) if soft else ()),
                                mounts=(Mount(GRAPHS, "/t"), Mount(graphs, "/g")), labels={KIT_LABEL: "coldchain"},
                                timeout_s=600))
    assert result.exit_code == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def doctor(engine, project, run_id, graph: Path, env: str, **flags) -> tuple[int, dict]:
    code, text = run_doctor(engine, project, DoctorRequest(model=graph, env_name=env, prefix=run_id, as_json=True,
                                                           **flags))
    return code, json.loads(text)


def verdicts(engine, image, graphs: Path, soft: bool) -> dict:
    """The doctor's exit code per graph, from its command-line entry point in that runtime."""
    result = engine.run(RunSpec(image=image.info.id, command=("python", "/t/verdicts.py", "/g")
                                + (("--allow-soft-placement",) if soft else ()),
                                mounts=(Mount(GRAPHS, "/t"), Mount(graphs, "/g")), labels={KIT_LABEL: "coldchain"},
                                timeout_s=900))
    assert result.exit_code == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("soft", [False, True], ids=["strict", "soft-placement"])
@pytest.mark.parametrize("env", RUNTIMES)
def test_the_doctor_agrees_with_what_the_runtime_does(docker_engine, graphs, runtimes, env, soft):
    actual = behaviour(docker_engine, runtimes[env], graphs, soft)
    codes = verdicts(docker_engine, runtimes[env], graphs, soft)
    assert len(actual) == len(codes) == 11
    disagreements = [f"{name}: the runtime: {what}; the doctor: exit {codes[name]}"
                     for name, what in sorted(actual.items()) if (codes[name] == 0) != (what == "works")]
    assert disagreements == []
    assert set(codes.values()) <= {0, 3}
    # The runtimes and the modes really differ on some graphs, so the agreement is no coincidence.
    assert actual["topk-int64-k"] == ("works" if env == "infer-cpu" else "import fails")
    assert actual["gpu-pin"] == ("works" if soft else "run fails") and actual["remote-job-pin"] == "run fails"
    assert actual["not-frozen"] == "run fails"  # every time: its variable's initializer is never fetched


def blocking(diagnosis: dict) -> dict:
    return {finding["code"]: finding for finding in diagnosis["findings"] if finding["severity"] == "error"}


def test_each_refusal_is_named_for_its_cause(docker_engine, project, run_id, graphs, runtimes):
    cases = {"unregistered-op": ("unregistered-op", "import"), "too-new": ("graph-too-new", "import"),
             "not-frozen": ("training-op", "run"), "training-mode": ("batch-norm-training-mode", "run"),
             # freeze_graph of a training graph: the moving-average updates are the consequence, batch norm
             # in training mode the cause the headline names.
             "training-mode-with-updates": ("batch-norm-training-mode", "import")}
    for name, (outcome, stage) in cases.items():
        code, diagnosis = doctor(docker_engine, project, run_id, graphs / f"{name}.pb", "infer-cpu")
        finding = blocking(diagnosis)[outcome]
        assert code == 3 and diagnosis["outcome"] == outcome, (name, diagnosis["outcome"])
        assert finding["confirmed"] == f"confirmed by the {stage} stage" or finding["stage"] == stage, (name, finding)
    finding = blocking(doctor(docker_engine, project, run_id, graphs / "training-mode-with-updates.pb",
                              "infer-cpu")[1])["batch-norm-training-mode"]
    assert "is_training=False" in finding["fix"]


def test_attributes_a_runtime_ignores_are_warnings_and_ones_it_refuses_block(docker_engine, project, run_id, graphs,
                                                                            runtimes):
    code, diagnosis = doctor(docker_engine, project, run_id, graphs / "future-attr.pb", "infer-cpu")
    finding = next(f for f in diagnosis["findings"] if f["code"] == "unknown-attr")
    assert code == 0 and finding["severity"] == "warning" and "golden probe" in finding["confirmed"]
    code, diagnosis = doctor(docker_engine, project, run_id, graphs / "topk-int64-k.pb", "tf2.7-py3.9")
    assert code == 3 and blocking(diagnosis)["unknown-attr"]["op"] == "TopKV2"


def test_pins_to_another_job_block_with_or_without_soft_placement(docker_engine, project, run_id, graphs, runtimes,
                                                                   tmp_path):
    for soft in (False, True):
        code, diagnosis = doctor(docker_engine, project, run_id, graphs / "remote-job-pin.pb", "infer-cpu",
                                 allow_soft_placement=soft)
        finding = blocking(diagnosis)["device-cluster"]
        assert code == 3 and "job 'worker'" in finding["cause"], soft
        assert "coldchain reexport MODEL --clear-devices" in finding["fix"]
    # The fix the doctor names, on a graph no coldchain step made: clear the devices, and it loads.
    from coldchain.steps.pipeline import StepConfig, run_step

    fixed = tmp_path / "fixed"
    step = StepConfig(name="reexport", role="infer", module="reexport", output=fixed, inputs={"/model": graphs},
                      arguments=("--model", "/model/remote-job-pin.pb", "--clear-devices"), prefix=run_id,
                      run_id=run_id)
    run_step(docker_engine, project, step, runtimes["infer-cpu"])
    code, diagnosis = doctor(docker_engine, project, run_id, fixed / "model.pb", "infer-cpu")
    assert code == 0 and diagnosis["findings"] == []
