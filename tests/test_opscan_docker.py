"""The graph scan on graphs that really contain ops an inference graph never needs: built with
TensorFlow's own APIs in the training image (tests/doctor_graphs/dangerous.py, in one container with
slim's own export and freeze_graph), then the doctor in the inference image must flag each, flag
nothing in slim's frozen graph nor the kit's frozen model, and let an --allow-op through, recorded.
Cheap: two containers build and diagnose all the graphs (the doctor's own entry point, one process);
`coldchain doctor` itself runs twice, on the kit's model and with --allow-op."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coldchain.config import KIT_LABEL
from coldchain.contract import FLAG_ALLOW_OP, Code, Exit
from coldchain.engine import Mount, RunSpec
from coldchain.steps.diagnose import DoctorRequest, run_doctor
from conftest import ROOT

pytestmark = pytest.mark.docker
GRAPHS = ROOT / "tests" / "doctor_graphs"
SLIM_USER = ROOT / "tests" / "slim_user"


@pytest.fixture(scope="module")
def built(docker_engine, kit_images, tmp_path_factory) -> Path:
    """dangerous/ (the dangerous graphs, and ops.json: graph name -> its op) and slim/frozen.pb: one
    container run in the training image."""
    out = tmp_path_factory.mktemp("dangerous-graphs")
    out.chmod(0o777)
    script = ("python /t/dangerous.py /out/dangerous > /out/ops.json && "
              "python /s/export_and_freeze.py /out/slim --image-size 112 >&2")
    result = docker_engine.run(RunSpec(image=kit_images["train"].info.id, command=("sh", "-c", script),
                                       mounts=(Mount(GRAPHS, "/t"), Mount(SLIM_USER, "/s"),
                                               Mount(out, "/out", read_only=False)),
                                       labels={KIT_LABEL: "coldchain"}, timeout_s=900))
    assert result.exit_code == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def diagnosed(docker_engine, kit_images, built) -> dict:
    """The doctor's exit code and diagnosis of each dangerous graph and of slim's frozen graph, in the
    inference image, from the doctor's own entry point: one process (tests/doctor_graphs/diagnoses.py)."""
    result = docker_engine.run(RunSpec(image=kit_images["infer"].info.id,
                                       command=("python", "/t/diagnoses.py", "/g/dangerous", "/g/slim/frozen.pb"),
                                       mounts=(Mount(GRAPHS, "/t"), Mount(built, "/g")),
                                       labels={KIT_LABEL: "coldchain"}, timeout_s=900))
    assert result.exit_code == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def doctor(engine, project, run_id, model: Path, **changes) -> tuple[int, dict]:
    code, text = run_doctor(engine, project, DoctorRequest(model=model, prefix=run_id, as_json=True, **changes))
    return code, json.loads(text)


def dangerous(diagnosis: dict, severity: str = "error") -> list[dict]:
    return [finding for finding in diagnosis["findings"]
            if finding["code"] == Code.DANGEROUS_OP and finding["severity"] == severity]


@pytest.mark.timeout(900)
def test_the_doctor_flags_every_dangerous_graph_and_does_not_run_it(built, diagnosed):
    ops = json.loads((built / "ops.json").read_text().strip().splitlines()[-1])
    flagged = {}
    for name, op in sorted(ops.items()):
        code, diagnosis = diagnosed[name]["exit"], diagnosed[name]["diagnosis"]
        findings = dangerous(diagnosis)
        flagged[name] = code == Exit.MODEL_BLOCKED and diagnosis["outcome"] == Code.DANGEROUS_OP and \
            [finding["op"] for finding in findings] == [op] and diagnosis["stages"]["run"].startswith("skipped")
        if name.startswith(("function", "nested", "cond")):  # found inside a function body, named by its call path
            assert findings and findings[0]["node"].count("/") >= (2 if name == "function_reads_file" else 3), name
    assert len(flagged) == 11
    assert [name for name, ok in flagged.items() if not ok] == [], f"flagged {sum(flagged.values())}/{len(flagged)}"


@pytest.mark.timeout(900)
def test_slims_frozen_graph_and_the_kits_model_are_flagged_zero_times(docker_engine, project, run_id, diagnosed,
                                                                       tiny_chain):
    slim = diagnosed["frozen"]["diagnosis"]
    code, kit = doctor(docker_engine, project, run_id, tiny_chain / "model")
    for exit_code, diagnosis in ((diagnosed["frozen"]["exit"], slim), (code, kit)):
        assert (exit_code, dangerous(diagnosis), dangerous(diagnosis, "warning")) == (Exit.OK, [], [])
        assert diagnosis["stages"]["run"].startswith("ran")


@pytest.mark.timeout(600)
def test_allow_op_lets_one_op_through_and_is_recorded(docker_engine, project, run_id, built):
    code, diagnosis = doctor(docker_engine, project, run_id, built / "dangerous" / "read_file.pb", run=False,
                             allowed_ops=("ReadFile",))
    assert code == Exit.OK and diagnosis["allowed_ops"] == ["ReadFile"] and dangerous(diagnosis) == []
    (allowed,) = dangerous(diagnosis, "warning")
    assert allowed["op"] == "ReadFile" and f"{FLAG_ALLOW_OP} ReadFile" in allowed["confirmed"]
