"""Other runtimes end to end, through the CLI: the model converted in the runtimes image and cached
beside it, golden-checked in ONNX Runtime and OpenVINO before any prediction, a tampered artefact
refused, a declared bf16 run recorded as what the runtime says it computed in and judged with the
bf16 tolerance, and conversion failures that name the op and the converter."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from coldchain.config import KIT_LABEL, RUNTIMES_IMAGE
from coldchain.contract import CONVERSION_FILE, CONVERTED_DIR, Exit
from coldchain.engine import RunSpec
from coldchain.hostinfo import cpu_flags
from conftest import IN_CI, ROOT, made_by_make_drift_test

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def runtimes_model(docker_engine, project, run_id, session_tags, tiny_chain, tmp_path_factory) -> Path:
    """A copy of the tiny model (conversions are written beside it), with the runtimes image built
    under this session's prefix."""
    session_tags.append(RUNTIMES_IMAGE.tag(run_id))
    model = tmp_path_factory.mktemp("runtimes") / "model"
    shutil.copytree(tiny_chain / "model", model)
    return model


def coldchain(prefix: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "coldchain", *args], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, COLDCHAIN_PREFIX=prefix), timeout=1800, check=False, shell=False)


def golden_only(prefix: str, model: Path, tmp_path: Path, *args: str) -> dict:
    images = tmp_path / "none"
    images.mkdir(exist_ok=True)
    completed = coldchain(prefix, "infer", "--model", str(model), "--output", str(tmp_path / "p.jsonl"),
                          "--input", str(images), *args, "--golden-only")
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_each_runtime_passes_the_golden_check_at_fp32(run_id, runtimes_model, tmp_path, runtime):
    summary = golden_only(run_id, runtimes_model, tmp_path, "--runtime", runtime)
    assert summary["golden"]["ok"] and summary["golden"]["first_divergence"] is None
    assert summary["runtime"]["name"] == runtime
    assert summary["runtime"]["precision_declared"] == summary["runtime"]["precision_effective"] == "fp32"
    record = json.loads((runtimes_model / CONVERTED_DIR / runtime / CONVERSION_FILE).read_text())
    manifest = json.loads((runtimes_model / "manifest.json").read_text())
    assert record["source_sha256"] == manifest["model"]["sha256"] and record["versions"] and record["lock_sha256"]
    assert summary["runtime"]["artefact"]["files"] == record["files"]
    # Predictions come from the model compiled for its output alone; that compilation passed too.
    alone = summary["golden"]["predictions_model"]
    assert alone["ok"] and len(alone["keys"]) == 1 and alone["keys"][0] in ("probabilities", "logits"), alone


def test_a_predictions_model_off_the_golden_is_refused(docker_engine, kit_images, run_id):
    """The outputs-only compilation is judged on its own: off by more than the tolerance, it is refused
    with the golden check's exit code, naming it (in the image: the check is in-container code)."""
    snippet = textwrap.dedent("""
        import numpy as np
        from incontainer.common import GoldenMismatch
        from incontainer.golden.check import check_outputs_only
        logits = np.array([[0.0, 3.0, 1.0], [2.0, 0.0, 0.5]], np.float32)
        manifest = {"inputs": [{"name": "input:0", "shape": [None, 4, 4, 3]}],
                    "golden": {"input_key": "input", "tensors": [
                        {"key": "block1", "name": "b:0", "abs_tol": 1e-4, "rel_tol": 1e-4},
                        {"key": "logits", "name": "l:0", "abs_tol": 1e-4, "rel_tol": 1e-4}]}}
        arrays = {"input": np.zeros((2, 4, 4, 3), np.float32), "logits": logits, "block1": np.zeros(2)}
        same = check_outputs_only(lambda b: {"logits": logits[:len(b)]}, ["logits"], "/m", manifest, arrays)
        print(same["ok"], same["bit_exact"], same["keys"])
        try:
            check_outputs_only(lambda b: {"logits": logits[:len(b)] + 0.01}, ["logits"], "/m", manifest, arrays)
        except GoldenMismatch as error:
            print("refused", error.exit_code, error)
    """)
    result = docker_engine.run(RunSpec(image=kit_images["infer"].info.id, command=("python", "-c", snippet),
                                       labels={KIT_LABEL: "coldchain", "io.coldchain.run": run_id}))
    assert result.exit_code == 0, result.stderr[-3000:]
    first, second = result.stdout.strip().splitlines()
    assert first == "True True ['logits']"
    assert second.startswith(f"refused {Exit.GOLDEN_MISMATCH} ") and "compiled for its predictions alone" in second
    assert "first divergence at logits" in second


def test_predictions_from_openvino_agree_with_tensorflow(run_id, runtimes_model, tiny_chain, tmp_path):
    rows = {}
    for runtime in ("tensorflow", "openvino"):
        output = tmp_path / f"{runtime}.jsonl"
        completed = coldchain(run_id, "infer", "--model", str(runtimes_model), "--output", str(output),
                              "--input", str(tiny_chain / "data" / "val"), "--runtime", runtime)
        assert completed.returncode == 0, completed.stderr[-3000:]
        rows[runtime] = {row["path"]: row["top_k"][0]["label"] for row in map(json.loads, output.read_text().splitlines())}
    assert rows["tensorflow"] and rows["tensorflow"] == rows["openvino"]


def test_a_tampered_artefact_is_refused_before_any_prediction(run_id, runtimes_model, tmp_path):
    golden_only(run_id, runtimes_model, tmp_path, "--runtime", "openvino")  # converted, current
    tampered = tmp_path / "model"
    shutil.copytree(runtimes_model, tampered)
    weights = tampered / CONVERTED_DIR / "openvino" / "model.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    output = tmp_path / "p.jsonl"
    completed = coldchain(run_id, "infer", "--model", str(tampered), "--output", str(output), "--input",
                          str(tmp_path), "--runtime", "openvino")
    assert completed.returncode == Exit.USAGE, completed.stderr[-2000:]
    assert f"{weights} changed since it was converted" in completed.stderr
    assert "coldchain convert --target openvino" in completed.stderr and "Traceback" not in completed.stderr
    assert not output.exists()


def test_a_declared_bf16_run_is_recorded_and_judged_with_its_tolerance(run_id, runtimes_model, tmp_path):
    summary = golden_only(run_id, runtimes_model, tmp_path, "--runtime", "openvino", "--precision", "bf16",
                          "--bf16-tolerance", "0.05")
    # Native bf16 (AVX512_BF16, AMX): bf16. AVX2 only: OpenVINO stays fp32. AVX-512 without BF16: OpenVINO
    # may emulate bf16, so either answer is the runtime's own and is what must be recorded.
    flags = set(cpu_flags())
    expected = {"bf16"} if {"avx512_bf16", "amx_bf16"} & flags else {"fp32"} if "avx512f" not in flags \
        else {"bf16", "fp32"}
    assert summary["runtime"]["precision_declared"] == "bf16"
    assert summary["runtime"]["precision_effective"] in expected
    manifest = json.loads((runtimes_model / "manifest.json").read_text())
    fp32 = {entry["key"]: entry["abs_tol"] for entry in manifest["golden"]["tensors"]}
    judged = {entry["key"]: entry["abs_tol"] for entry in summary["golden"]["tensors"]}
    assert all(judged[key] >= fp32[key] for key in fp32) and judged["logits"] > fp32["logits"]


def test_bf16_is_refused_where_the_runtime_cannot_compute_it(run_id, runtimes_model, tmp_path):
    completed = coldchain(run_id, "infer", "--model", str(runtimes_model), "--output", str(tmp_path / "p.jsonl"),
                          "--input", str(tmp_path), "--runtime", "onnxruntime", "--precision", "bf16")
    assert completed.returncode == Exit.USAGE and "fp32 only" in completed.stderr


def drift_report_cases() -> dict:
    """The cases of the report `make drift-test` wrote (CI runs it before the tests), by name."""
    report_path = made_by_make_drift_test()
    if report_path is None:
        if IN_CI:
            pytest.fail("CI runs make drift-test before the tests; its report is missing or stale")
        pytest.skip("needs a current out/drift report: run make drift-test")
    return {case["name"]: case for case in json.loads(report_path.read_text())["cases"]}


def test_conversion_failures_name_the_op_and_the_converter():
    """From the drift report `make drift-test` wrote (CI runs it before the tests): the custom op that
    neither tf2onnx nor OpenVINO can convert."""
    cases = drift_report_cases()
    for name, converter in (("onnxruntime-custom-op", "tf2onnx"), ("openvino-custom-op", "openvino")):
        case = cases[name]
        assert case["outcome"] == "conversion-failed" and case["ok"], case["reasons"]
        assert "unsupported op ColdchainTemperatureScale;" in case["load_error"] and converter in case["load_error"]


def test_tflite_cases_record_xnnpack_the_precision_computed_and_the_model_s_bound():
    """From the drift report `make drift-test` wrote: TFLite fp32 with XNNPACK on and off and full int8,
    each as expected, with XNNPACK's state, the precision read back and int8's measured bound."""
    cases = drift_report_cases()
    for name, enabled, precision in (("tflite-fp32-xnnpack", True, "fp32"), ("tflite-fp32-no-xnnpack", False, "fp32"),
                                     ("tflite-int8", True, "int8")):
        case = cases[name]
        assert case["ok"], case["reasons"]
        assert case["runtime"]["xnnpack"]["enabled"] is enabled and case["runtime"]["precision_effective"] == precision
    int8 = cases["tflite-int8"]
    assert int8["golden"]["kind"] == "quantized" and int8["golden"]["bound"]["source"] == "measured"
    assert int8["runtime"]["artefact"]["calibration"]["source"] == "images"  # make's data/train, as make quantize


def test_openvino_and_onnxruntime_int8_cases_record_the_precision_computed_the_bound_and_the_cpu():
    """From the drift report `make drift-test` wrote: OpenVINO (NNCF) and ONNX Runtime (static QDQ) int8,
    each within the bound its conversion measured, computing in int8 as the runtime reports, with the
    CPU's instructions recorded (the int8 outcome must not depend on them: 7-bit weights)."""
    cases = drift_report_cases()
    for name in ("openvino-int8", "onnxruntime-int8"):
        case = cases[name]
        assert case["ok"], case["reasons"]
        assert case["runtime"]["precision_declared"] == "int8" == case["runtime"]["precision_effective"]
        assert case["golden"]["kind"] == "quantized" and case["golden"]["bound"]["source"] == "measured"
        assert case["runtime"]["artefact"]["calibration"]["source"] == "images"
        assert "avx2" in case["numerics"]["isa"]  # every x86-64 CI machine; VNNI/AMX recorded where present


def test_the_int8_artefacts_pass_as_an_emulated_avx2_cpu_with_the_same_artefact_and_bound():
    """From the drift report `make drift-test` wrote: the same int8 artefacts run as a Haswell under qemu
    (AVX2, no AVX-512, no VNNI: int16 sums), on whatever CPU this machine has, and the report says which
    CPU the kernels saw, not the host's."""
    cases = drift_report_cases()
    for name in ("openvino-int8", "onnxruntime-int8"):
        native, emulated = cases[name], cases[f"{name}-avx2"]
        assert emulated["ok"] and emulated["outcome"] == "pass", emulated["reasons"]
        assert emulated["numerics"]["emulated_cpu"] == "Haswell-v4"
        assert emulated["numerics"]["isa"] == ["avx", "avx2", "fma"]
        assert emulated["runtime"]["artefact"]["files"] == native["runtime"]["artefact"]["files"]
        assert emulated["golden"]["bound"] == native["golden"]["bound"]


def test_fastest_picks_a_golden_passing_runtime_and_says_why(run_id, runtimes_model, tmp_path):
    summary = golden_only(run_id, runtimes_model, tmp_path, "--runtime", "fastest")
    choice = summary["runtime_choice"]
    timed = {c["runtime"]: c["images_per_second_batch_8"] for c in choice["candidates"] if c.get("golden_ok")}
    assert set(timed) == {"tensorflow", "onnxruntime", "openvino"}
    assert choice["picked"] == max(timed, key=timed.get) == summary["runtime"]["name"]
    assert choice["picked"] in choice["why"] and "fastest" in choice["why"]
    bf16 = golden_only(run_id, runtimes_model, tmp_path, "--runtime", "fastest", "--precision", "bf16")
    assert bf16["runtime_choice"]["picked"] == "openvino"  # the one runtime here that can compute bf16
    assert {c["runtime"] for c in bf16["runtime_choice"]["candidates"] if "skipped" in c} == {"tensorflow",
                                                                                             "onnxruntime"}


def test_the_drift_probe_keeps_its_onnx_conversion_between_runs(run_id, runtimes_model, tiny_chain, tmp_path):
    """The same graph in the same image converts to the same ONNX model: the second run uses the one
    the first kept (and a failed conversion is kept with its message), with the same outcome."""
    out = tmp_path / "drift"
    outcomes = []
    for _ in range(2):
        completed = coldchain(run_id, "drift-test", "--model", str(runtimes_model), "--run", str(tiny_chain / "run"),
                              "--out", str(out), "--case", "onnxruntime-fp32", "--case", "onnxruntime-custom-op",
                              "--json")
        assert completed.returncode == 0, completed.stderr[-3000:]
        cases = {case["name"]: case for case in json.loads(completed.stdout)["cases"]}
        outcomes.append({name: (case["outcome"], (case.get("runtime") or {}).get("conversion"))
                         for name, case in cases.items()})
    assert outcomes[0]["onnxruntime-fp32"][1] == "converted", outcomes
    assert outcomes[1]["onnxruntime-fp32"] == (outcomes[0]["onnxruntime-fp32"][0], "kept"), outcomes
    assert outcomes[0]["onnxruntime-custom-op"][0] == outcomes[1]["onnxruntime-custom-op"][0] == "conversion-failed"
    assert list((out / "conversions").glob("*.onnx")) and list((out / "conversions").glob("*.failed.txt"))
