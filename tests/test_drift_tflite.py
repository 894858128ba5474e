"""TFLite drift cases without a daemon: their matrix settings, the probe's arguments, the one conversion
container per drift run (calibrated as the kit does, or on the golden inputs for an adopted model),
its reuse while current, a failed conversion as the cases' outcome, and the report's XNNPACK and bound."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from coldchain import contract
from coldchain.contract import MODULES, ProbeReport
from coldchain.drift.report import describe_quantized, describe_runtime
from coldchain.drift.tflite import needed_targets
from coldchain.engine import ImageInfo, RunResult
from coldchain.environments.matrix import load_matrix
from coldchain.errors import UsageError
from fake_engine import FakeEngine
from test_drift import ROOT_MATRIX, write

MATRIX = """
schema = 1
reference_env = "runtimes"
[envs.runtimes]
lock = "bench"
[[cases]]
name = "fp32"
env = "runtimes"
runtime = "tflite"
expect = "pass"
[[cases]]
name = "fp32-plain"
env = "runtimes"
runtime = "tflite"
xnnpack = false
expect = "pass"
[[cases]]
name = "int8"
env = "runtimes"
runtime = "tflite"
precision = "int8"
expect = "pass"
[[cases]]
name = "tf"
env = "runtimes"
expect = "pass"
"""
SHA = "ab" * 32


def test_the_shipped_matrix_runs_tflite_fp32_both_ways_and_int8_in_the_runtimes_environment():
    cases = {case.name: case for case in load_matrix(ROOT_MATRIX).cases}
    settings = {name: (cases[name].env, cases[name].settings.precision, cases[name].settings.xnnpack)
                for name in ("tflite-fp32-xnnpack", "tflite-fp32-no-xnnpack", "tflite-int8")}
    assert settings == {"tflite-fp32-xnnpack": ("runtimes", "fp32", True),
                        "tflite-fp32-no-xnnpack": ("runtimes", "fp32", False),
                        "tflite-int8": ("runtimes", "int8", True)}
    # Every expected outcome is one that holds on any x86-64 CPU: no CPU-dependent hard-coded result.
    assert {cases[name].expect for name in settings} == {"pass"}
    # One conversion container for all of them: fp32 and int8, made once and shared by both fp32 cases
    # (and by the OpenVINO and ONNX Runtime int8 cases' artefacts).
    assert needed_targets(cases.values()) == {("runtimes", "default"): (
        "onnxruntime-int8", "openvino-int8", "tflite-fp32", "tflite-int8")}


@pytest.mark.parametrize("case, message, fix", [
    ('runtime = "openvino"\nxnnpack = false', "xnnpack is a tflite setting", 'runtime = "tflite"'),
    ('runtime = "tflite"\nprecision = "bf16"', "unknown precision 'bf16' (a tflite precision)", "fp16"),
    ('runtime = "tflite"\nxnnpack = "no"', "xnnpack must be true or false", "xnnpack = false"),
    ('runtime = "tflite"\nprecision = "int9"', "unknown precision 'int9'", "int8"),
])
def test_tflite_settings_are_checked_by_name(tmp_path, case, message, fix):
    text = MATRIX.replace('runtime = "tflite"\nexpect = "pass"\n[[cases]]\nname = "fp32-plain"',
                          f'{case}\nexpect = "pass"\n[[cases]]\nname = "fp32-plain"', 1)
    with pytest.raises(UsageError) as caught:
        load_matrix(write(tmp_path, text))
    assert message in caught.value.message and fix in caught.value.fix


def test_the_probe_reads_the_run_s_artefact_with_xnnpack_as_declared(tmp_path):
    from coldchain.drift.probe import probe_arguments

    cases = {case.name: case for case in load_matrix(write(tmp_path, MATRIX)).cases}
    plain = probe_arguments(cases["fp32-plain"])
    assert plain[plain.index("--runtime") + 1] == "tflite" and "--no-xnnpack" in plain
    assert plain[plain.index("--converted") + 1] == "/converted/default" and "--precision" not in plain
    int8 = probe_arguments(cases["int8"])
    assert int8[int8.index("--precision") + 1] == "int8" and "--no-xnnpack" not in int8
    assert "--converted" not in probe_arguments(cases["tf"])


def fake_drift(tmp_path, monkeypatch, project, *, kit_data: bool, fail: str | None = None):
    """run_drift_test over MATRIX through the fake engine: the convert container writes each target's
    conversion.json (or fails with `fail`), the probe answers a pass per case with its runtime."""
    from coldchain.drift.runner import DriftOptions, run_drift_test

    def found(engine, project, specs, options):
        return [SimpleNamespace(spec=spec, tag=f"{options.prefix}-{spec.name}", reused=True, info=ImageInfo(
            id=f"sha256:{spec.name}", tags=(), size=7, labels={"io.coldchain.tensorflow.version": "2.14.1"}))
                for spec in specs]

    def answer(spec):
        arguments = list(spec.command[3:])
        if spec.command[2] == MODULES["convert"]:
            if fail:
                return RunResult(1, "", contract.error_line(fail), seconds=1.0)
            (staging,) = [mount.source for mount in spec.mounts if mount.target == contract.MOUNT_OUT]
            for target in [arguments[i + 1] for i, word in enumerate(arguments) if word == contract.FLAG_RUNTIME]:
                (staging / target).mkdir()
                (staging / target / contract.CONVERSION_FILE).write_text(json.dumps({"source_sha256": SHA}))
            return RunResult(0, "{}\n", "", seconds=1.0)
        plan = json.loads(spec.command[spec.command.index("--plan") + 1])
        reports = {entry["name"]: ProbeReport(outcome="pass", loaded=True, golden={"ok": True, "tensors": []},
                                              seconds=0.5).to_dict() for entry in plan}
        return RunResult(0, json.dumps(reports) + "\n", "", seconds=2.0)

    model = tmp_path / "out" / "model"
    model.mkdir(parents=True, exist_ok=True)
    (model / "manifest.json").write_text(json.dumps({"model": {"file": "model.pb", "sha256": SHA}}))
    (model / "model.pb").write_bytes(b"graph")
    if kit_data:
        (tmp_path / "out" / "data" / "train").mkdir(parents=True, exist_ok=True)
    engine = FakeEngine()
    engine.run_handler = answer
    monkeypatch.setattr("coldchain.environments.images.build_images", found)
    options = DriftOptions(model=model, run=None, out=tmp_path / "drift", prefix="t", run_id="t-1")
    report = run_drift_test(engine, project, load_matrix(write(tmp_path, MATRIX)), options)
    return report, engine.runs


def converts(runs) -> list:
    return [list(run.command[3:]) for run in runs if run.command[2] == MODULES["convert"]]


def test_one_conversion_container_per_drift_run_calibrated_as_the_kit_does_and_reused(tmp_path, monkeypatch, project):
    report, runs = fake_drift(tmp_path, monkeypatch, project, kit_data=True)
    (arguments,) = converts(runs)
    assert [arguments[i + 1] for i, word in enumerate(arguments) if word == "--runtime"] == ["tflite-fp32",
                                                                                            "tflite-int8"]
    assert arguments[arguments.index("--calibration-images") + 1] == contract.MOUNT_CALIBRATION
    assert "--calibrate-on-golden" not in arguments
    (convert,) = [run for run in runs if run.command[2] == MODULES["convert"]]
    mounted = {mount.target: Path(mount.source) for mount in convert.mounts}
    assert mounted[contract.MOUNT_CALIBRATION].resolve() == (tmp_path / "out" / "data" / "train").resolve()
    root = (tmp_path / "drift" / "tflite" / "runtimes" / "default").resolve()
    assert sorted(path.name for path in root.iterdir()) == ["converted-on.json", "tflite-fp32", "tflite-int8"]
    (probe,) = [run for run in runs if run.command[2] == MODULES["probe"]]
    assert {mount.target: Path(mount.source) for mount in probe.mounts}["/converted/default"] == root
    assert {case["name"]: case["ok"] for case in report["cases"]} == {"fp32": True, "fp32-plain": True, "int8": True,
                                                                      "tf": True}
    assert report["timing"]["tflite_conversions_s"] >= 0
    # The next run finds them current: no conversion container.
    _, again = fake_drift(tmp_path, monkeypatch, project, kit_data=True)
    assert converts(again) == []
    # Carried to another CPU class, they are converted again: the bound is measured where the case runs.
    monkeypatch.setattr("coldchain.drift.tflite.cpu_class", lambda: "another-class")
    _, elsewhere = fake_drift(tmp_path, monkeypatch, project, kit_data=True)
    assert len(converts(elsewhere)) == 1


def test_an_adopted_model_calibrates_int8_on_its_golden_inputs(tmp_path, monkeypatch, project):
    _, runs = fake_drift(tmp_path, monkeypatch, project, kit_data=False)
    (arguments,) = converts(runs)
    assert "--calibrate-on-golden" in arguments and "--calibration-images" not in arguments


def test_a_failed_conversion_is_the_tflite_cases_outcome_not_a_crash(tmp_path, monkeypatch, project):
    report, runs = fake_drift(tmp_path, monkeypatch, project, kit_data=True,
                              fail="tflite fp32 conversion failed: unsupported op Foo")
    cases = {case["name"]: case for case in report["cases"]}
    for name in ("fp32", "fp32-plain", "int8"):
        assert cases[name]["outcome"] == "conversion-failed" and not cases[name]["ok"]
        assert "unsupported op Foo" in cases[name]["reasons"][-1]
    assert cases["tf"]["ok"]
    (probe,) = [run for run in runs if run.command[2] == MODULES["probe"]]
    assert [entry["name"] for entry in json.loads(probe.command[4])] == ["tf"]


def test_the_report_names_xnnpack_s_state_and_the_model_s_bound():
    runtime = {"name": "tflite", "versions": {"ai_edge_litert": "2.3.0"}, "precision_declared": "int8",
               "precision_effective": "int8", "xnnpack": {"enabled": False, "op_resolver": "BUILTIN"}}
    assert describe_runtime(runtime) == "tflite (ai_edge_litert 2.3.0): int8, declared int8, XNNPACK off"
    golden = {"kind": "quantized", "max_prob_error": 0.0123, "top1_agreement": 1.0,
              "bound": {"max_prob_error": 0.0369, "min_top1_agreement": 1.0, "source": "measured"}}
    assert describe_quantized(golden) == ("probability error 0.0123 (bound 0.0369, measured), top-1 1 (bound 1)")
    assert describe_quantized({"ok": True, "tensors": []}) == ""


def test_the_probe_s_quantized_check_reports_a_miss_as_data_where_infer_refuses():
    import sys

    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "scripts"))
    from incontainer.common import GoldenMismatch
    from incontainer.golden import quantized

    bound = {"max_prob_error": 0.05, "min_top1_agreement": 1.0, "source": "measured"}
    reference, flipped = [[0.7, 0.3], [0.2, 0.8]], [[0.45, 0.55], [0.2, 0.8]]
    summary = quantized.summarize(bound, reference, flipped)
    assert not summary["ok"] and summary["first_divergence"] == "probabilities" and summary["top1"]["agree"] == 1
    assert quantized.summarize(bound, reference, reference)["ok"]
    with pytest.raises(GoldenMismatch):
        quantized.check(bound, reference, flipped, "m", "tflite int8")
