"""TensorFlow Lite end to end, through the CLI: the session's tiny model converted to every TFLite
target in one container run (full int8 calibrated on its own training images), each conversion's
golden measurement and bound recorded, every precision golden-checked in LiteRT with XNNPACK's state
in the summary, and a bound tighter than the int8 model's own error refused with the golden exit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from coldchain.config import RUNTIMES_IMAGE
from coldchain.contract import (CONVERSION_FILE, CONVERTED_DIR, FLAG_GOLDEN_BOUND, QUANTIZED_MIN_TOP1_FOR_SPEED,
                                QUANTIZED_PRECISIONS, TFLITE_TARGETS,
                                Exit)
from conftest import ROOT, TINY_CLASSES, TINY_TRAIN_PER_CLASS, TINY_VAL_PER_CLASS

pytestmark = pytest.mark.docker


def coldchain(prefix: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "coldchain", *args], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, COLDCHAIN_PREFIX=prefix), timeout=1800, check=False, shell=False)


@pytest.fixture(scope="module")
def tflite_model(run_id, session_tags, tiny_chain, tmp_path_factory) -> Path:
    """A copy of the tiny model converted to every TFLite target by one `coldchain convert`."""
    session_tags.append(RUNTIMES_IMAGE.tag(run_id))
    model = tmp_path_factory.mktemp("tflite") / "model"
    shutil.copytree(tiny_chain / "model", model)
    targets = [word for target in TFLITE_TARGETS for word in ("--target", target)]
    completed = coldchain(run_id, "convert", *targets, "--calibration-images", str(tiny_chain / "data" / "train"),
                          str(model))
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stderr.count("convert: --out") == 1, "one container for every target"
    return model


def record(model: Path, target: str) -> dict:
    return json.loads((model / CONVERTED_DIR / target / CONVERSION_FILE).read_text())


def infer(prefix: str, model: Path, tmp_path: Path, precision: str, *args: str) -> subprocess.CompletedProcess:
    return coldchain(prefix, "infer", "--model", str(model), "--no-golden-cache", "--runtime", "tflite",
                     "--precision", precision, "--output", str(tmp_path / "p.jsonl"), *args)


def test_every_target_records_its_artefact_versions_and_golden_measurement(tflite_model):
    manifest = json.loads((tflite_model / "manifest.json").read_text())
    for target in TFLITE_TARGETS:
        made = record(tflite_model, target)
        precision = target.split("-", 1)[1]
        assert made["source_sha256"] == manifest["model"]["sha256"] and list(made["files"]) == ["model.tflite"]
        assert made["versions"]["tensorflow_converter"] and made["versions"]["ai_edge_litert"] != "absent"
        assert made["golden_measured"]["images"] > 0 and made["precision"] == precision
        assert ("golden_bound" in made) == (precision in QUANTIZED_PRECISIONS), target
    calibrated = record(tflite_model, "tflite-int8")["calibration"]
    assert calibrated["images"] == min(TINY_CLASSES * TINY_TRAIN_PER_CLASS, calibrated["max_images"])


@pytest.mark.parametrize("precision", ["fp16", "dynamic"])
def test_fp16_and_dynamic_pass_the_quantized_check(run_id, tflite_model, tmp_path, precision):
    completed = infer(run_id, tflite_model, tmp_path, precision, "--golden-only")
    assert completed.returncode == 0, completed.stderr[-3000:]
    golden = json.loads(completed.stdout.strip().splitlines()[-1])["golden"]
    assert golden["ok"] and golden["kind"] == "quantized"
    assert golden["bound"] == record(tflite_model, f"tflite-{precision}")["golden_bound"]


def test_fp32_passes_the_fp32_golden_check_with_xnnpack_on_and_off(run_id, tflite_model, tiny_chain, tmp_path):
    for args, enabled in (((), True), (("--no-xnnpack",), False)):
        completed = infer(run_id, tflite_model, tmp_path, "fp32", *args, str(tiny_chain / "data" / "val"))
        assert completed.returncode == 0, completed.stderr[-3000:]
        summary = json.loads(completed.stdout.strip().splitlines()[-1])
        assert summary["golden"]["ok"] and "kind" not in summary["golden"]  # the fp32 tolerances, not the bound
        assert summary["runtime"]["name"] == "tflite" and summary["runtime"]["xnnpack"]["enabled"] is enabled
        assert summary["images"] == TINY_CLASSES * TINY_VAL_PER_CLASS


def test_int8_predicts_within_its_bound_and_a_tighter_one_is_refused(run_id, tflite_model, tiny_chain, tmp_path):
    completed = infer(run_id, tflite_model, tmp_path, "int8", str(tiny_chain / "data" / "val"))
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    golden, bound = summary["golden"], record(tflite_model, "tflite-int8")["golden_bound"]
    assert golden["ok"] and golden["bound"] == bound and golden["max_prob_error"] <= bound["max_prob_error"]
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == TINY_CLASSES * TINY_VAL_PER_CLASS
    # Full int8 is never exact (its softmax alone is quantized): half its own error must be refused.
    error = golden["max_prob_error"]
    assert error > 0, "the int8 model reproduced the golden exactly: no tighter bound to refuse"
    refused = infer(run_id, tflite_model, tmp_path, "int8", FLAG_GOLDEN_BOUND, repr(error / 2), "--golden-only")
    assert refused.returncode == Exit.GOLDEN_MISMATCH, refused.stderr[-3000:]
    assert "golden check failed at stage run (tflite int8)" in refused.stderr and "declared bound" in refused.stderr


def test_fastest_considers_int8_only_where_it_is_declared(run_id, tflite_model, tmp_path):
    completed = coldchain(run_id, "infer", "--model", str(tflite_model), "--no-golden-cache", "--runtime", "fastest",
                          "--precision", "int8", "--golden-only", "--output", str(tmp_path / "p.jsonl"))
    # Picked for speed only while it keeps fp32's top-1 on the golden images (what its conversion measured).
    if record(tflite_model, "tflite-int8")["golden_measured"]["top1_agreement"] < QUANTIZED_MIN_TOP1_FOR_SPEED:
        assert completed.returncode != 0 and "a model picked for speed needs" in completed.stderr, completed.stderr
        return
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    choice = summary["runtime_choice"]
    assert choice["picked"] == "tflite" == summary["runtime"]["name"] and summary["golden"]["kind"] == "quantized"
    assert {c["runtime"] for c in choice["candidates"] if "skipped" in c} == {"tensorflow"}
    # OpenVINO and ONNX Runtime compute int8 too, from artefacts calibrated on images this copy has none of.
    assert {c["runtime"] for c in choice["candidates"] if "refused" in c} == {"onnxruntime", "openvino"}
