"""OpenVINO (NNCF) and ONNX Runtime (static QDQ) int8 without a daemon: the targets and which artefact a
runtime and precision read, the convert request (calibration and held-out images mounted, one container,
tf2onnx's memory), infer's options, the drift matrix's int8 cases (converted once per drift run beside
TFLite's, sharing the runtimes container), their judging on the fake engine, and the finding that names
the CPU's int8 instructions and the fix. The quantizers themselves run in the runtimes image
(test_int8_docker)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import test_drift_tflite
from coldchain import contract
from coldchain.cli import main
from coldchain.contract import MODULES, ProbeReport
from coldchain.engine import RunResult
from coldchain.environments.matrix import load_matrix
from coldchain.errors import UsageError
from coldchain.steps.convert import ONNX_CONVERSION_MEMORY, calibration_images, held_out_images
from coldchain.steps.infer import InferRequest, conversion_targets
from conftest import ROOT
from fake_engine import FakeEngine
from test_drift import ROOT_MATRIX, write
from test_tflite import IMAGE, kit  # noqa: F401 - fixture: the kit's layout

sys.path.insert(0, str(ROOT / "scripts"))  # the container side's plain-Python modules
from incontainer.golden import quantized  # noqa: E402


# --- targets ----------------------------------------------------------------------------------
@pytest.mark.parametrize("runtime, precision, folder, per_run", [
    ("openvino", "int8", "openvino-int8", "openvino-int8"), ("onnxruntime", "int8", "onnxruntime-int8", "onnxruntime-int8"),
    ("openvino", "fp32", "openvino", None), ("openvino", "bf16", "openvino", None), ("onnxruntime", "fp32", "onnxruntime", None),
    ("tflite", "int8", "tflite-int8", "tflite-int8"), ("tflite", "fp32", "tflite-fp32", "tflite-fp32"),
    ("tensorflow", "fp32", "tensorflow", None)])
def test_each_runtime_and_precision_has_its_own_artefact(runtime, precision, folder, per_run):
    assert contract.artefact_target(runtime, precision) == folder
    assert contract.per_run_target(runtime, precision) == per_run


def test_int8_targets_are_conversion_targets_that_need_calibration_images():
    assert set(contract.INT8_TARGETS) == {"openvino-int8", "onnxruntime-int8"}
    assert set(contract.INT8_TARGETS) <= set(contract.CONVERSION_TARGETS) & set(contract.CALIBRATION_TARGETS)
    assert contract.quantized_runtimes("int8") == ("tflite", "onnxruntime", "openvino")
    assert contract.quantized_runtimes("fp16") == ("tflite",)
    # The flags the int8 finding names are among those every report records (numerics.isa).
    assert set(contract.INT8_DOT_FLAGS) <= set(contract.NUMERICS_FLAGS)


# --- the conversion request -------------------------------------------------------------------
def test_int8_targets_calibrate_on_the_kit_s_training_images_and_measure_its_held_out_ones(kit, tmp_path):
    assert calibration_images(kit, "openvino-int8", None) == kit.resolve().parent / "data" / "train"
    assert held_out_images(kit, ("openvino-int8",)) is None  # the kit fixture has no data/val
    (kit.parent / "data" / "val").mkdir()
    assert held_out_images(kit, ("tflite-int8", "onnxruntime-int8")) == (kit.parent / "data" / "val").resolve()
    assert held_out_images(kit, ("tflite-int8", "openvino")) == (kit.parent / "data" / "val").resolve()
    assert held_out_images(kit, ("tflite-fp32", "openvino")) is None  # only the full int8 targets measure them
    alone = tmp_path / "adopted"
    alone.mkdir()
    with pytest.raises(UsageError) as caught:
        calibration_images(alone, "onnxruntime-int8", None)
    assert contract.FLAG_CALIBRATION_IMAGES in caught.value.fix


def test_both_int8_targets_convert_in_one_container_with_both_image_sets(kit, project, monkeypatch):
    (kit.parent / "data" / "val").mkdir()
    engine = FakeEngine()

    def container(spec):
        arguments = list(spec.command[3:])
        (staging,) = [mount.source for mount in spec.mounts if mount.target == contract.MOUNT_OUT]
        for target in [arguments[i + 1] for i, word in enumerate(arguments) if word == contract.FLAG_RUNTIME]:
            (staging / target).mkdir()
            (staging / target / contract.CONVERSION_FILE).write_text(json.dumps({"runtime": target}))
        return RunResult(0, "{}\n", "")

    engine.run_handler = container
    monkeypatch.setattr("coldchain.cli.base.connect", lambda: engine)
    monkeypatch.setattr("coldchain.steps.convert.runtimes_image", lambda *args, **kwargs: IMAGE)
    result = CliRunner().invoke(main, ["convert", "--project", str(project.root), "--target", "openvino-int8",
                                       "--target", "onnxruntime-int8", "--memory", "4g", str(kit)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (run,) = engine.runs
    arguments = list(run.command[3:])
    assert [arguments[i + 1] for i, word in enumerate(arguments) if word == contract.FLAG_RUNTIME] == [
        "openvino-int8", "onnxruntime-int8"]
    assert arguments[arguments.index(contract.FLAG_HELD_OUT_IMAGES) + 1] == contract.MOUNT_IMAGES
    mounted = {mount.target: Path(mount.source).resolve() for mount in run.mounts}
    assert mounted[contract.MOUNT_CALIBRATION] == (kit.parent / "data" / "train").resolve()
    assert mounted[contract.MOUNT_IMAGES] == (kit.parent / "data" / "val").resolve()
    assert run.mem_limit == ONNX_CONVERSION_MEMORY  # tf2onnx runs first for onnxruntime-int8
    assert sorted(path.name for path in (kit / contract.CONVERTED_DIR).iterdir()) == ["onnxruntime-int8",
                                                                                     "openvino-int8"]


# --- infer's options --------------------------------------------------------------------------
@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_infer_at_int8_reads_the_runtime_s_int8_artefact_and_its_bound_keys_the_golden_cache(runtime):
    assert conversion_targets(InferRequest(model=Path("m"), runtime=runtime, precision="int8")) == (f"{runtime}-int8",)
    with pytest.raises(UsageError) as caught:
        conversion_targets(InferRequest(model=Path("m"), runtime=runtime, precision="fp16"))
    assert "tflite" in caught.value.message


# --- the drift matrix -------------------------------------------------------------------------
def test_the_shipped_matrix_runs_both_int8_runtimes_in_the_runtimes_environment_as_pass():
    cases = {case.name: case for case in load_matrix(ROOT_MATRIX).cases}
    for name, runtime in (("openvino-int8", "openvino"), ("onnxruntime-int8", "onnxruntime")):
        case = cases[name]
        assert (case.env, case.settings.runtime, case.settings.precision) == ("runtimes", runtime, "int8")
        # 7-bit weights make the integers every x86-64 CPU class computes the same: no CPU-dependent outcome.
        assert case.expect == "pass" and case.settings.per_run_target == f"{runtime}-int8"


@pytest.mark.parametrize("case, message", [('runtime = "tensorflow"\nprecision = "int8"', "unknown precision 'int8'"),
                                           ('runtime = "openvino"\nprecision = "fp16"', "unknown precision 'fp16'")])
def test_int8_is_accepted_for_the_converted_runtimes_alone(tmp_path, case, message):
    text = test_drift_tflite.MATRIX.replace('runtime = "tflite"\nexpect = "pass"\n[[cases]]\nname = "fp32-plain"',
                                            f'{case}\nexpect = "pass"\n[[cases]]\nname = "fp32-plain"', 1)
    with pytest.raises(UsageError) as caught:
        load_matrix(write(tmp_path, text))
    assert message in caught.value.message


INT8_CASES = """
[[cases]]
name = "ov-int8"
env = "runtimes"
runtime = "openvino"
precision = "int8"
expect = "pass"
[[cases]]
name = "ort-int8"
env = "runtimes"
runtime = "onnxruntime"
precision = "int8"
expect = "pass"
"""


def test_int8_cases_convert_with_tflite_s_once_and_probe_in_the_shared_container(tmp_path, monkeypatch, project):
    from coldchain.drift.probe import probe_arguments

    monkeypatch.setattr(test_drift_tflite, "MATRIX", test_drift_tflite.MATRIX + INT8_CASES)
    report, runs = test_drift_tflite.fake_drift(tmp_path, monkeypatch, project, kit_data=True)
    (arguments,) = test_drift_tflite.converts(runs)
    assert [arguments[i + 1] for i, word in enumerate(arguments) if word == "--runtime"] == [
        "onnxruntime-int8", "openvino-int8", "tflite-fp32", "tflite-int8"]
    probes = [run for run in runs if run.command[2] == MODULES["probe"]]
    assert len(probes) == 1  # the int8 cases share the runtimes container with TFLite's and TensorFlow's
    plan = {entry["name"]: entry["args"] for entry in json.loads(probes[0].command[4])}
    for name in ("ov-int8", "ort-int8"):
        assert plan[name][plan[name].index("--converted") + 1] == "/converted/default"
        assert plan[name][plan[name].index("--precision") + 1] == "int8"
    assert {case["name"]: case["ok"] for case in report["cases"]}["ort-int8"]
    cases = {case.name: case for case in load_matrix(write(tmp_path, test_drift_tflite.MATRIX)).cases}
    assert probe_arguments(cases["ort-int8"]) == tuple(plan["ort-int8"])


def test_an_int8_case_past_its_bound_fails_its_pass_expectation(tmp_path, monkeypatch, project):
    monkeypatch.setattr(test_drift_tflite, "MATRIX", test_drift_tflite.MATRIX + INT8_CASES)
    original = FakeEngine.run

    def missing(self, spec, log=None):
        result = original(self, spec, log=log)
        if spec.command[2] != MODULES["probe"]:
            return result
        reports = json.loads(result.stdout)
        reports["ort-int8"] = ProbeReport(outcome="golden-mismatch", loaded=True, golden={
            "ok": False, "kind": "quantized", "max_prob_error": 0.4, "top1_agreement": 0.5,
            "bound": {"max_prob_error": 0.1, "min_top1_agreement": 1.0, "source": "measured"}}, seconds=0.5).to_dict()
        return RunResult(0, json.dumps(reports) + "\n", "", seconds=result.seconds)

    monkeypatch.setattr(FakeEngine, "run", missing)
    report, _ = test_drift_tflite.fake_drift(tmp_path, monkeypatch, project, kit_data=True)
    cases = {case["name"]: case for case in report["cases"]}
    assert not cases["ort-int8"]["ok"] and cases["ort-int8"]["outcome"] == "golden-mismatch"
    assert cases["ov-int8"]["ok"]


# --- the finding that names the CPU ---------------------------------------------------------
@pytest.mark.parametrize("runtime, isa, named, fix", [
    ("onnxruntime", ["avx2", "fma"], "none of avx512_vnni, avx_vnni, amx_int8", "reduce_range=True"),
    ("onnxruntime", ["avx2", "avx512_vnni"], "this CPU has avx512_vnni", "reduce_range=True"),
    ("openvino", ["avx2", "amx_int8", "avx512_vnni"], "this CPU has avx512_vnni, amx_int8", "overflow_fix=ENABLE"),
    ("tflite", ["avx2"], "none of", contract.FLAG_GOLDEN_BOUND)])
def test_an_int8_miss_names_the_cpu_s_int8_instructions_and_the_fix(runtime, isa, named, fix):
    cause, remedy = quantized.cpu_dependence(runtime, {"quantization": {"reduce_range": False}}, isa)
    assert named in cause and "reduce_range=False" in cause and fix in remedy


def test_infer_s_int8_refusal_names_the_stage_the_cpu_s_int8_instructions_and_the_fix():
    from incontainer.common import GoldenMismatch

    bound = {"max_prob_error": 0.05, "min_top1_agreement": 1.0, "source": "measured"}
    reference, flipped = [[0.7, 0.3], [0.2, 0.8]], [[0.45, 0.55], [0.2, 0.8]]
    advice = quantized.cpu_dependence("onnxruntime", {"quantization": {"reduce_range": True}}, ["avx2"])
    with pytest.raises(GoldenMismatch) as caught:
        quantized.check(bound, reference, flipped, "m", "onnxruntime int8", advice=advice)
    message = str(caught.value)
    assert "golden check failed at stage run (onnxruntime int8)" in message
    assert "none of avx512_vnni, avx_vnni, amx_int8" in message and "fix: quantize with reduce_range=True" in message
