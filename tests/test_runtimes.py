"""Other runtimes, host side: how the matrix declares them, how their outcomes are judged on CPUs
with and without bf16, and when a model's conversion must be made again. No daemon needed."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from coldchain.contract import (CONVERSION_FILE, CONVERTED_DIR, EXPECT_AS_PRECISION, FLAG_BF16_TOLERANCE,
                                FLAG_PRECISION, FLAG_RUNTIME, PRECISION_BF16, PRECISION_FP32,
                                PRECISION_RUNTIME_DEFAULT, Code)
from coldchain.drift.judging import required_findings, resolve_expectation
from coldchain.environments.matrix import load_matrix
from coldchain.drift.report import describe_runtime
from coldchain.drift.judging import judge
from coldchain.drift.probe import probe_arguments
from coldchain.errors import UsageError
from coldchain.steps.convert import stale_because

HEAD = """
schema = 1
reference_env = "rt"
[envs.rt]
lock = "bench"
"""


def matrix_with(tmp_path: Path, case: str):
    path = tmp_path / "matrix.toml"
    path.write_text(HEAD + "[[cases]]\nname = \"c\"\nenv = \"rt\"\n" + case)
    return load_matrix(path)


def test_the_shipped_matrix_runs_every_runtime_and_precision(project):
    matrix = load_matrix(project.path("drift/matrix.toml"))
    declared = {(case.settings.runtime, case.settings.precision, case.expect) for case in matrix.cases}
    assert ("onnxruntime", PRECISION_FP32, "pass") in declared
    assert ("openvino", PRECISION_FP32, "pass") in declared
    assert ("openvino", PRECISION_RUNTIME_DEFAULT, EXPECT_AS_PRECISION) in declared
    assert {case.expect for case in matrix.cases if case.settings.runtime != "tensorflow"} >= {
        "conversion-failed", "batch-norm-training-mode"}


@pytest.mark.parametrize("case, message", [
    ('expect = "pass"\nruntime = "tensorflow"\nprecision = "bf16"\n', "fp32 only"),
    ('expect = "pass"\nruntime = "onnxruntime"\nprecision = "runtime-default"\n', "fp32 only"),
    ('expect = "pass"\nruntime = "onnx"\n', "did you mean 'onnxruntime'"),
    ('expect = "as-precision"\nruntime = "openvino"\n', "as-precision is for"),
    ('expect = "pass"\nruntime = "openvino"\nprecision = "bf16"\nbf16_tolerance = 2\n', "between 0 and 1"),
])
def test_runtime_settings_are_checked_in_the_users_words(tmp_path, case, message):
    with pytest.raises(UsageError) as caught:
        matrix_with(tmp_path, case)
    assert message in str(caught.value) + (caught.value.fix or "")


def test_a_declared_bf16_case_passes_its_tolerance_to_the_probe(tmp_path):
    matrix = matrix_with(tmp_path, 'expect = "pass"\nruntime = "openvino"\nprecision = "bf16"\nbf16_tolerance = 0.05\n')
    arguments = probe_arguments(matrix.cases[0])
    assert arguments[arguments.index(FLAG_RUNTIME) + 1] == "openvino"
    assert arguments[arguments.index(FLAG_PRECISION) + 1] == PRECISION_BF16
    assert arguments[arguments.index(FLAG_BF16_TOLERANCE) + 1] == "0.05"


def test_tensorflow_cases_pass_no_runtime_flags(tmp_path):
    matrix = matrix_with(tmp_path, 'expect = "pass"\n')
    assert FLAG_RUNTIME not in probe_arguments(matrix.cases[0]) and FLAG_PRECISION not in probe_arguments(matrix.cases[0])


@pytest.mark.parametrize("effective, expected", [
    (PRECISION_FP32, "pass"),  # a CPU without bf16: OpenVINO stays in fp32
    (PRECISION_BF16, Code.GOLDEN_MISMATCH),  # AVX512_BF16 / AMX: bf16 by default, outside fp32 tolerances
    ("fp16", Code.GOLDEN_MISMATCH),
])
def test_as_precision_holds_on_cpus_with_and_without_bf16(effective, expected):
    assert resolve_expectation(EXPECT_AS_PRECISION, None, effective) == expected


def test_a_runtime_default_case_in_bf16_must_name_the_reduced_precision(tmp_path):
    case = matrix_with(tmp_path, 'expect = "as-precision"\nruntime = "openvino"\nprecision = "runtime-default"\n').cases[0]
    assert required_findings(case, PRECISION_FP32) == ()
    assert required_findings(case, PRECISION_BF16) == (Code.REDUCED_PRECISION,)
    resolved, ok, _ = judge(case, Code.GOLDEN_MISMATCH, {Code.REDUCED_PRECISION}, None, PRECISION_BF16)
    assert (resolved, ok) == (Code.GOLDEN_MISMATCH, True)
    _, ok, reasons = judge(case, Code.GOLDEN_MISMATCH, set(), None, PRECISION_BF16)
    assert not ok and "reduced-precision" in reasons[0]
    _, ok, reasons = judge(case, Code.GOLDEN_MISMATCH, set(), None, PRECISION_FP32)
    assert not ok and "computed in fp32" in reasons[0]
    assert judge(case, "pass", set(), None, PRECISION_FP32)[1]


def test_the_report_names_runtime_versions_and_both_precisions():
    text = describe_runtime({"name": "openvino", "versions": {"openvino": "2026.4.1"},
                             "precision_declared": PRECISION_RUNTIME_DEFAULT, "precision_effective": PRECISION_BF16})
    assert text == "openvino (openvino 2026.4.1): bf16, declared runtime-default"
    assert describe_runtime({"name": "tensorflow"}) == "" and describe_runtime(None) == ""


def conversion(tmp_path: Path, model_sha: str = "a" * 64, record: dict | None = None) -> Path:
    model = tmp_path / "model"
    (model / CONVERTED_DIR / "openvino").mkdir(parents=True)
    (model / "manifest.json").write_text(json.dumps({"model": {"sha256": model_sha}}))
    if record is not None:
        (model / CONVERTED_DIR / "openvino" / CONVERSION_FILE).write_text(json.dumps(record))
    return model


IMAGE = SimpleNamespace(info=SimpleNamespace(labels={"io.coldchain.lock.sha256": "lock-1"}))


@pytest.mark.parametrize("record, reason", [
    (None, "no conversion yet"),
    ({"source_sha256": "b" * 64, "lock_sha256": "lock-1"}, "the model changed"),
    ({"source_sha256": "a" * 64, "lock_sha256": "lock-0"}, "lock changed"),
    ({"source_sha256": "a" * 64, "lock_sha256": "lock-1"}, None),
])
def test_a_conversion_is_made_again_when_the_model_or_the_converter_changed(tmp_path, record, reason):
    found = stale_because(conversion(tmp_path, record=record), "openvino", IMAGE)
    assert (found is None) if reason is None else (reason in found)


def test_an_unreadable_conversion_record_is_made_again(tmp_path):
    model = conversion(tmp_path, record={})
    (model / CONVERTED_DIR / "openvino" / CONVERSION_FILE).write_text("{")
    assert "unreadable" in stale_because(model, "openvino", IMAGE)


@pytest.mark.parametrize("runtime, given, expected", [
    ("onnxruntime", "8g", "16g"), ("onnxruntime", "20g", "20g"), ("onnxruntime", "17179869184", "17179869184"),
    ("openvino", "8g", "8g"), ("tensorflow", "512m", "512m"),
])
def test_onnx_conversion_gets_the_memory_tf2onnx_needs(runtime, given, expected):
    from coldchain.steps.convert import memory_for

    assert memory_for(runtime, given) == expected


def test_a_memory_limit_that_is_not_a_size_is_refused():
    from coldchain.steps.convert import memory_bytes

    with pytest.raises(UsageError, match="not a size"):
        memory_bytes("lots")
