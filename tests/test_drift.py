"""Drift matrix parsing, outcome comparison, reports and the host-side flow, without a daemon."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from coldchain.config import IMAGES, LOCKS, Project
from coldchain.contract import MODULES, WARNING_CODES
from coldchain.drift.assembly import summarise
from coldchain.drift.judging import CaseResult, lock_drift
from coldchain.drift.probe import probe_arguments
from coldchain.errors import UsageError
from coldchain.contract import FAILURE_CLASSES
from coldchain.drift.judging import outcome_matches, resolve_expectation
from coldchain.environments.matrix import Matrix, environment_image_spec, load_matrix
from coldchain.drift.report import junit, markdown, write_reports

ROOT_MATRIX = Path(__file__).resolve().parent.parent / "drift" / "matrix.toml"
MINIMAL = """
schema = 1
reference_env = "training"
[envs.training]
image = "train-cpu"
[envs.newer]
lock = "drift-tf2.21-py3.11"
[[cases]]
name = "one"
env = "training"
expect = "bit-exact"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "matrix.toml"
    path.write_text(text)
    return path


def test_the_shipped_matrix_covers_what_the_issue_asks(project):
    matrix = load_matrix(project.path("drift/matrix.toml"))
    locks = {env.lock_name for env in matrix.envs.values()}
    assert {"train-cpu", "infer-cpu", "infer-cuda", "drift-tf2.21-py3.11", "drift-tf2.7-py3.9"} <= locks
    assert LOCKS["drift-tf2.7-py3.9"].python == "3.9" and LOCKS["drift-tf2.7-py3.9"].base == "bullseye"
    expectations = {case.expect for case in matrix.cases} | {code for case in matrix.cases for code in case.expect_findings}
    for scenario in ("unregistered-op", "op-library-abi-mismatch", "device-unavailable", "batch-norm-training-mode",
                     "preprocessing-mismatch", "lock-drift", "as-reference"):
        assert scenario in expectations
    onednn = {case.settings.environment for case in matrix.cases if case.settings.environment}
    assert (("TF_ENABLE_ONEDNN_OPTS", "1"),) in onednn and (("TF_ENABLE_ONEDNN_OPTS", "0"),) in onednn
    assert matrix.envs[matrix.reference_env].image == "train-cpu"


def test_one_helper_turns_a_matrix_environment_into_its_image(tmp_path):
    project = Project(tmp_path)
    write(tmp_path, MINIMAL)
    assert environment_image_spec(project, Path("matrix.toml"), "training", "--env") == IMAGES["train-cpu"]
    newer = environment_image_spec(project, tmp_path / "matrix.toml", "newer", "--with")
    assert (newer.role, newer.lock, newer.env, newer.name) == ("infer", "drift-tf2.21-py3.11", "newer", "drift-newer")
    with pytest.raises(UsageError, match=r"unknown environment 'newr' \(--reference-env\)") as caught:
        environment_image_spec(project, Path("matrix.toml"), "newr", "--reference-env")
    assert caught.value.fix == "did you mean 'newer'?"


def test_doctor_and_adopt_name_a_matrix_environment_through_that_helper(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from coldchain.engine import ImageInfo
    from coldchain.steps.adopt import AdoptRequest, reference_image
    from coldchain.steps.diagnose import DoctorRequest, image_for
    from fake_engine import FakeEngine

    project, matrix = Project(tmp_path), Path("matrix.toml")
    write(tmp_path, MINIMAL)
    built = SimpleNamespace(tag="t-drift-newer:cpu", info=ImageInfo(id="sha256:1", tags=(), labels={}, size=1))
    specs = []
    monkeypatch.setattr("coldchain.environments.images.build_images",
                        lambda engine, project, wanted, options: specs.extend(wanted) or [built])
    doctor = lambda env: image_for(FakeEngine(), project, DoctorRequest(model=tmp_path, env_name=env,  # noqa: E731
                                                                         matrix_path=matrix))
    adopt = lambda env: reference_image(FakeEngine(), project, AdoptRequest(  # noqa: E731
        model=tmp_path, out=tmp_path / "adopted", reference_env=env, matrix_path=matrix))
    assert doctor("newer").id == "sha256:1"
    assert adopt("newer")[1] == "drift-matrix environment newer (t-drift-newer:cpu)"
    assert specs == [environment_image_spec(project, matrix, "newer", "--env")] * 2
    with pytest.raises(UsageError, match=r"unknown environment 'newr' \(--env\)"):
        doctor("newr")
    with pytest.raises(UsageError, match=r"unknown environment 'newr' \(--reference-env\)"):
        adopt("newr")


def test_freeze_image_builds_the_training_image_once_and_the_op_build_image_from_it(monkeypatch):
    from coldchain.drift import variants
    from coldchain.environments.images import BuildOptions

    calls = []
    monkeypatch.setattr(variants, "ensure_image",
                        lambda engine, project, spec, options: calls.append(spec.name) or f"image:{spec.name}")
    monkeypatch.setattr(variants, "build_opbuild_image",
                        lambda engine, project, train, options: calls.append(f"opbuild from {train}") or "image:opbuild")
    built = {}
    assert variants.freeze_image(None, None, "train", BuildOptions(), built) == "image:train-cpu"
    assert variants.freeze_image(None, None, "opbuild", BuildOptions(), built) == "image:opbuild"
    assert variants.freeze_image(None, None, "opbuild", BuildOptions(), built) == "image:opbuild"
    assert calls == ["train-cpu", "opbuild from image:train-cpu"]
    assert built == {"train-cpu": "image:train-cpu", "opbuild": "image:opbuild"}


def test_minimal_matrix_parses_with_defaults(tmp_path):
    matrix = load_matrix(write(tmp_path, MINIMAL))
    assert matrix.envs["training"].must_match_training_lock  # kit images must share the training pins
    assert not matrix.envs["newer"].must_match_training_lock
    assert matrix.cases[0].variant == "default"


@pytest.mark.parametrize("edit, message, hint", [
    (('env = "training"', 'env = "trainig"'), "unknown environment 'trainig'", "did you mean 'training'?"),
    (('expect = "bit-exact"', 'expect = "bit-exakt"'), "unknown outcome 'bit-exakt'", "did you mean 'bit-exact'?"),
    (('image = "train-cpu"', 'image = "train-gpu"'), "unknown image 'train-gpu'", "did you mean 'train-cpu'?"),
    (('lock = "drift-tf2.21-py3.11"', 'lock = "drift-tf2.22-py3.11"'), "unknown lock", "did you mean"),
    (('[[cases]]\nname = "one"', '[[cases]]\nnmae = "x"\nname = "one"'), "unknown key 'nmae'", "did you mean 'name'?"),
    (("schema = 1", "schema = 2"), "schema 2 is not 1", "schema = 1"),
])
def test_matrix_mistakes_name_the_file_and_the_nearest_valid_value(tmp_path, edit, message, hint):
    path = write(tmp_path, MINIMAL.replace(*edit))
    with pytest.raises(UsageError) as caught:
        load_matrix(path)
    assert str(path) in caught.value.message and message in caught.value.message
    assert hint in caught.value.fix


def test_broken_toml_and_duplicates(tmp_path):
    with pytest.raises(UsageError, match="not valid TOML"):
        load_matrix(write(tmp_path, MINIMAL + "\n[[cases]\n"))
    twice = MINIMAL + '\n[[cases]]\nname = "one"\nenv = "training"\nexpect = "pass"\n'
    with pytest.raises(UsageError, match="case names repeat: one"):
        load_matrix(write(tmp_path, twice))
    with pytest.raises(UsageError, match="exactly one of image"):
        load_matrix(write(tmp_path, MINIMAL.replace('image = "train-cpu"', 'image = "train-cpu"\nlock = "train-cpu"')))


def test_selecting_an_unknown_case_suggests_one(tmp_path):
    matrix = load_matrix(write(tmp_path, MINIMAL))
    with pytest.raises(UsageError) as caught:
        matrix.select(("oen",))
    assert "did you mean 'one'?" in caught.value.fix


def test_outcome_matching():
    assert outcome_matches("pass", "bit-exact") and outcome_matches("pass", "pass")
    assert not outcome_matches("bit-exact", "pass")
    assert not outcome_matches("pass", "golden-mismatch")
    assert outcome_matches("unregistered-op", "unregistered-op")
    assert not outcome_matches("unregistered-op", "load-error")
    # Lock drift is a finding reported beside the probe's real outcome, never an outcome of its own.
    assert "lock-drift" in WARNING_CODES and "lock-drift" not in FAILURE_CLASSES


def test_probe_command_carries_the_settings(tmp_path):
    matrix = load_matrix(write(tmp_path, MINIMAL.replace(
        'expect = "bit-exact"', 'expect = "pass"\nintra_op_threads = 1\nload_op_libraries = true\n'
                                'allow_soft_placement = true\npreprocessing = ["channel_order=BGR"]')))
    command = probe_arguments(matrix.cases[0])
    assert MODULES["probe"] == "incontainer.golden.probe"
    for flag in ("--load-op-libraries", "--allow-soft-placement", "--intra-op-threads"):
        assert flag in command
    assert command[command.index("--preprocessing") + 1] == "channel_order=BGR"


def test_lock_drift_lists_shared_pins_that_differ(project):
    matrix = load_matrix(project.path("drift/matrix.toml"))
    drifted = lock_drift(project, matrix.envs["infer-numpy-drift"])
    assert any(line.startswith("numpy: requirements.lock has 1.26.4") and "1.25.2" in line for line in drifted)
    assert lock_drift(project, matrix.envs["infer-cpu"]) == []


def _result(matrix: Matrix, name: str, outcome: str, probe: dict | None) -> CaseResult:
    case = next(case for case in matrix.cases if case.name == name)
    resolved = resolve_expectation(case.expect, [])  # as if computed with the golden's own numerics
    ok = outcome_matches(resolved, outcome)
    return CaseResult(case=case, env=matrix.envs[case.env], image="img", image_labels={
        "io.coldchain.tensorflow.version": "2.14.1", "io.coldchain.python.version": "3.11.2"},
        expected=case.expect, resolved=resolved, outcome=outcome, ok=ok, probe=probe, lock_drift=[], seconds=1.5,
        reasons=[] if ok else [f"expected {resolved}, got {outcome}"])


def _report(results: list[CaseResult]) -> dict:
    cases = [r.to_json() for r in results]
    return {"matrix": "drift/matrix.toml", "reference_env": "training", "model": "out/model", "model_sha256": "ab" * 32,
            **summarise(cases),
            "environments": {"training": {"image": "img", "tensorflow": "2.14.1", "python": "3.11.2", "device": "cpu",
                                          "lock": "requirements.lock", "size_bytes": 1.8e9}},
            "cases": cases,
            "timing": {"environments_s": 1.0, "variants_s": 2.0, "cases_s": 3.0, "total_s": 6.0, "jobs": 1},
            "generated": "2026-11-25T00:00:00Z", "host_cpu": "test cpu"}


GOLDEN = {"ok": True, "bit_exact": True, "first_divergence": None, "top1": {"agree": 4, "count": 4},
          "tensors": [{"key": "logits", "max_abs_diff": 0.0, "max_rel_diff": 0.0, "ok": True}]}


def test_reports_show_every_case_and_fail_the_unexpected_one(tmp_path, project):
    matrix = load_matrix(project.path("drift/matrix.toml"))
    unregistered = {"loaded": False, "outcome": "unregistered-op", "diagnosis": {"findings": [
        {"code": "unregistered-op", "severity": "error", "cause": "op ColdchainTemperatureScale is not registered",
         "fix": "load ops/libcoldchain_ops.so"}]}}
    results = [_result(matrix, "training-env", "bit-exact", {"loaded": True, "outcome": "bit-exact", "golden": GOLDEN}),
               _result(matrix, "custom-op-not-loaded", "unregistered-op", unregistered),
               _result(matrix, "gpu-pinned", "bit-exact", {"loaded": True, "outcome": "bit-exact", "golden": GOLDEN})]
    report = _report(results)
    assert not report["ok"] and report["counts"]["unexpected"] == 1
    suite = ElementTree.fromstring(junit(report)).find("testsuite")
    assert suite.get("tests") == "3" and suite.get("failures") == "1"
    failed = [case.get("name") for case in suite.findall("testcase") if case.find("failure") is not None]
    assert failed == ["gpu-pinned"]
    text = markdown(report)
    assert "**UNEXPECTED**" in text and "load ops/libcoldchain_ops.so" in text
    assert report["tensorflow_versions"][0]["bit_exact"] is True
    paths = write_reports(report, tmp_path / "drift")
    assert json.loads(paths["json"].read_text())["counts"]["unexpected"] == 1
    assert not list((tmp_path / "drift").glob(".*tmp*"))  # no temp files left behind


def GOOD_REPORT() -> dict:
    """A one-case report, for tests elsewhere that need something real to write."""
    from coldchain.config import Project
    from conftest import ROOT

    matrix = load_matrix(Project(ROOT).path("drift/matrix.toml"))
    return _report([_result(matrix, "training-env", "bit-exact", {"loaded": True, "outcome": "bit-exact",
                                                                 "golden": GOLDEN})])


def test_as_reference_resolves_by_the_effective_numerics():
    from coldchain.drift.judging import judge

    matrix_case = load_matrix(ROOT_MATRIX).select(("onednn-off",)).cases[0]
    assert matrix_case.expect == "as-reference"
    resolved, ok, reasons = judge(matrix_case, "pass", set(), [])
    assert resolved == "bit-exact" and not ok and "same numerics" in reasons[0]
    resolved, ok, _ = judge(matrix_case, "pass", set(), ["oneDNN enabled True -> False"])
    assert resolved == "pass" and ok
    resolved, ok, _ = judge(matrix_case, "bit-exact", set(), None)  # unknown numerics: within tolerance suffices
    assert resolved == "pass" and ok


def test_expected_findings_must_be_reported_beside_the_outcome():
    from coldchain.drift.judging import judge

    case = load_matrix(ROOT_MATRIX).select(("lock-drift",)).cases[0]
    assert case.expect_findings == ("lock-drift",)
    assert judge(case, "bit-exact", {"lock-drift"}, None)[1]
    ok, reasons = judge(case, "bit-exact", set(), None)[1:]
    assert not ok and "lock-drift" in reasons[0]
    assert not judge(case, "golden-mismatch", {"lock-drift"}, None)[1], "the probe's real outcome still counts"


def test_numerics_differences_name_what_differs():
    from coldchain.contract import numerics_differences

    base = {"tensorflow": "2.14.1", "isa": ["avx2"], "threads_effective": [2, 2], "device": "cpu", "machine": "x86_64",
            "onednn": {"enabled": True, "max_cpu_isa": None}}
    assert numerics_differences(base, dict(base)) == []
    assert numerics_differences(base, {**base, "threads_effective": [1, 1]}) == ["threads_effective [2, 2] -> [1, 1]"]
    assert numerics_differences(base, {**base, "onednn": {"enabled": None}}) is None
    assert numerics_differences(None, base) is None


def test_cases_share_a_container_unless_their_settings_would_leak():
    from coldchain.drift.probe import group_cases

    matrix = load_matrix(ROOT_MATRIX)
    groups = group_cases(matrix.cases)
    together = next(group for group in groups if any(case.name == "infer-cpu" for case in group))
    names = {case.name for case in together}
    assert {"infer-cpu", "one-thread", "gpu-pinned", "preprocessing-bgr", "custom-op-not-loaded"} <= names
    # TF_ENABLE_ONEDNN_OPTS is read once per process; a loaded op library stays registered.
    assert not names & {"onednn-on", "onednn-off", "custom-op-loaded"}
    assert [case.name for group in groups for case in group if len(group) == 1 and case.settings.load_op_libraries] \
        == ["custom-op-loaded", "custom-op-other-tf", "onnxruntime-custom-op"]
    openvino = next(group for group in groups if any(case.name == "openvino-fp32" for case in group))
    # TFLite and the int8 cases run artefacts converted beforehand, with nothing left in the process: they
    # share the container.
    assert {case.name for case in openvino} == {"openvino-fp32", "openvino-default-precision", "openvino-bf16-declared",
                                                "openvino-training-mode", "openvino-custom-op", "tflite-fp32-xnnpack",
                                                "tflite-fp32-no-xnnpack", "tflite-int8", "openvino-int8",
                                                "onnxruntime-int8"}
    # tf2onnx needs a container of its own size: each ONNX Runtime case that converts in the probe runs alone.
    assert all(len(group) == 1 for group in groups for case in group
               if case.settings.runtime == "onnxruntime" and case.settings.per_run_target is None)
    assert sorted(case.name for group in groups for case in group) == sorted(case.name for case in matrix.cases)
    assert len(groups) < 0.6 * len(matrix.cases)
    assert [len(group) for group in group_cases(matrix.cases, isolate=True)] == [1] * len(matrix.cases)


E2E_MATRIX = """
schema = 1
reference_env = "training"
[envs.training]
image = "train-cpu"
[envs.numpy]
lock = "drift-infer-numpy-drift"
must_match_training_lock = true
[variants.retrained]
freeze = ["--training-mode"]
[variants.reexported]
reexport_in = "training"
strip_default_attrs = true
[[cases]]
name = "same"
env = "training"
expect = "as-reference"
[[cases]]
name = "tolerant"
env = "training"
expect = "pass"
[[cases]]
name = "reexported"
env = "training"
variant = "reexported"
expect = "bit-exact"
[[cases]]
name = "retrained"
env = "training"
variant = "retrained"
expect = "bit-exact"
[[cases]]
name = "numpy"
env = "numpy"
expect = "pass"
expect_findings = ["lock-drift"]
[[cases]]
name = "silent"
env = "numpy"
environment = { TF_ENABLE_ONEDNN_OPTS = "0" }
expect = "pass"
"""
NUMERICS = {"tensorflow": "2.14.1", "isa": "avx2", "threads_effective": [2, 2], "device": "cpu", "machine": "x86_64",
            "onednn": {"enabled": True, "max_cpu_isa": "AVX2", "decided_by": "default"}}


def run_fake_drift_test(tmp_path, monkeypatch, project, wrap=None, **extra) -> tuple[dict, list]:
    """run_drift_test through the fake engine: images found, one re-export, probe containers answered
    by the case names in their plan (the 'silent' one's container fails). `wrap` may stand between the
    containers and those answers; `extra` are more DriftOptions."""
    from coldchain.contract import ProbeReport, error_line
    from coldchain.drift.runner import DriftOptions, run_drift_test
    from coldchain.engine import RunResult
    from fake_engine import FakeEngine, found_images

    def answer(spec):
        if spec.command[2] != MODULES["probe"]:
            return RunResult(0, "", "", seconds=1.0)
        plan = json.loads(spec.command[spec.command.index("--plan") + 1])
        if any(entry["name"] == "silent" for entry in plan):
            return RunResult(1, "", error_line("the graph would not load"), seconds=2.0)
        outcomes = {"same": "bit-exact", "tolerant": "pass", "reexported": "golden-mismatch", "numpy": "pass"}
        reports = {entry["name"]: ProbeReport(outcome=outcomes[entry["name"]], loaded=True, numerics=NUMERICS,
                                              golden={"bit_exact": True, "tensors": []}, seconds=0.5).to_dict()
                   for entry in plan}
        return RunResult(0, json.dumps(reports) + "\n", "", seconds=4.0)

    model = tmp_path / "model"
    model.mkdir()
    (model / "manifest.json").write_text(json.dumps({"model": {"sha256": "ab" * 32}, "golden": {"numerics": NUMERICS}}))
    engine = FakeEngine()
    engine.run_handler = wrap(answer) if wrap else answer
    monkeypatch.setattr("coldchain.environments.images.build_images", found_images)
    matrix = load_matrix(write(tmp_path, E2E_MATRIX))
    options = DriftOptions(model=model, run=None, out=tmp_path / "drift", prefix="t", run_id="t-1", jobs=2, **extra)
    return run_drift_test(engine, project, matrix, options), engine.runs


def test_the_drift_test_through_the_fake_engine(tmp_path, monkeypatch, project):
    report, runs = run_fake_drift_test(tmp_path, monkeypatch, project)
    cases = {case["name"]: case for case in report["cases"]}
    assert [case["name"] for case in report["cases"]] == ["same", "tolerant", "reexported", "retrained", "numpy",
                                                          "silent"]
    assert report["counts"] == {"cases": 6, "as_expected": 3, "unexpected": 2, "not_applicable": 1}
    assert (cases["same"]["resolved_expectation"], cases["same"]["ok"]) == ("bit-exact", True)
    assert cases["reexported"]["reasons"] == ["expected bit-exact, got golden-mismatch"]
    assert cases["retrained"]["outcome"] == "not-applicable" and "--run DIR" in cases["retrained"]["reasons"][0]
    assert [finding["code"] for finding in cases["numpy"]["findings"]] == ["lock-drift"] and cases["numpy"]["ok"]
    assert cases["silent"]["outcome"] == "error" and "the graph would not load" in cases["silent"]["reasons"][-1]
    assert cases["same"]["timing"]["cases_in_container"] == 3 and cases["same"]["timing"]["container_s"] == 4.0
    assert cases["same"]["timing"]["container_overhead_s"] == round((4.0 - 1.5) / 3, 3)
    assert report["variants"]["reexported"] == str((tmp_path / "drift" / "models" / "reexported").resolve())
    assert report["variants"]["retrained"].startswith("not applicable: it re-freezes")
    assert sorted(report["environments"]) == ["numpy", "training"]
    assert report["environments"]["numpy"]["lock"] == LOCKS["drift-infer-numpy-drift"].lock
    reexport = next(run for run in runs if run.command[2] == MODULES["reexport"])
    assert reexport.command[3:] == ("--out", "/out", "--model", "/model", "--strip-default-attrs")
    assert sorted(len(json.loads(run.command[4])) for run in runs if run.command[2] == MODULES["probe"]) == [1, 1, 3]
