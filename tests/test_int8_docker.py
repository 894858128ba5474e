"""OpenVINO (NNCF) and ONNX Runtime (static QDQ) int8 end to end, through the CLI: the session's tiny
model converted to both int8 targets in one container run (calibrated on its training images, top-1
agreement measured on its held-out ones), each conversion's bound and effective precision recorded, each
golden-checked by infer at int8 with the precision the runtime reports, and a bound tighter than the
model's own error refused with the golden exit and the stage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from coldchain.config import RUNTIMES_IMAGE
from coldchain.contract import CONVERSION_FILE, CONVERTED_DIR, FLAG_GOLDEN_BOUND, INT8_TARGETS, Exit
from conftest import TINY_CLASSES, TINY_TRAIN_PER_CLASS, TINY_VAL_PER_CLASS
from test_tflite_docker import coldchain

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def int8_model(run_id, session_tags, tiny_chain, tmp_path_factory) -> Path:
    """A copy of the tiny model, in the kit's layout (data/train and data/val beside it), converted to
    both int8 targets by one `coldchain convert`."""
    session_tags.append(RUNTIMES_IMAGE.tag(run_id))
    root = tmp_path_factory.mktemp("int8")
    shutil.copytree(tiny_chain / "model", root / "model")
    for split in ("train", "val"):
        shutil.copytree(tiny_chain / "data" / split, root / "data" / split)
    targets = [word for target in INT8_TARGETS for word in ("--target", target)]
    completed = coldchain(run_id, "convert", *targets, str(root / "model"))
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stderr.count("convert: --out") == 1, "one container for both targets"
    return root / "model"


def record(model: Path, target: str) -> dict:
    return json.loads((model / CONVERTED_DIR / target / CONVERSION_FILE).read_text())


def test_each_int8_conversion_records_its_calibration_bound_held_out_agreement_and_precision(int8_model):
    manifest = json.loads((int8_model / "manifest.json").read_text())
    for target, converter in (("openvino-int8", "nncf"), ("onnxruntime-int8", "onnxruntime")):
        made = record(int8_model, target)
        assert made["source_sha256"] == manifest["model"]["sha256"] and made["files"] and made["versions"][converter]
        assert made["calibration"] == {"source": "images", "images": TINY_CLASSES * TINY_TRAIN_PER_CLASS,
                                       "max_images": made["calibration"]["max_images"]}
        assert made["golden_bound"]["source"] == "measured" and made["golden_measured"]["images"] > 0
        assert made["held_out"]["images"] == TINY_CLASSES * TINY_VAL_PER_CLASS
        assert 0 <= made["held_out"]["agreement"] <= 1
        # What the runtime reports it computes in: int8 layers in OpenVINO's runtime model, QLinear
        # nodes in ONNX Runtime's optimized graph.
        assert made["precision_effective"] == "int8", made["runtime"]
    assert record(int8_model, "onnxruntime-int8")["quantization"]["reduce_range"] is True
    assert record(int8_model, "openvino-int8")["quantization"]["overflow_fix"] == "ENABLE"


def infer(prefix: str, model: Path, tmp_path: Path, runtime: str, *args: str):
    return coldchain(prefix, "infer", "--model", str(model), "--no-golden-cache", "--runtime", runtime, "--precision",
                     "int8", "--golden-only", "--output", str(tmp_path / "p.jsonl"), *args)


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_infer_at_int8_passes_the_bound_its_conversion_measured_in_int8(run_id, int8_model, tmp_path, runtime):
    completed = infer(run_id, int8_model, tmp_path, runtime)
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    golden, bound = summary["golden"], record(int8_model, f"{runtime}-int8")["golden_bound"]
    assert golden["ok"] and golden["kind"] == "quantized" and golden["bound"] == bound
    assert golden["max_prob_error"] <= bound["max_prob_error"]
    assert summary["runtime"]["precision_declared"] == "int8" == summary["runtime"]["precision_effective"]


def test_a_bound_tighter_than_the_int8_model_s_own_error_is_refused_naming_the_stage(run_id, int8_model, tmp_path):
    error = record(int8_model, "onnxruntime-int8")["golden_measured"]["max_prob_error"]
    # ONNX Runtime quantizes the softmax's output too (QLinearSoftmax, steps of 1/256): never exact.
    assert error > 0, "the int8 model reproduced the golden exactly: no tighter bound to refuse"
    refused = infer(run_id, int8_model, tmp_path, "onnxruntime", FLAG_GOLDEN_BOUND, repr(error / 2))
    assert refused.returncode == Exit.GOLDEN_MISMATCH, refused.stderr[-3000:]
    assert "golden check failed at stage run (onnxruntime int8)" in refused.stderr
