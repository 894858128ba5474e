"""TensorFlow Lite and the quantized golden check, without a daemon: the convert and infer options,
the conversion request the host builds (several targets in one container, calibration images mounted),
and the quantized check's rule (top-1 agreement plus a probability-error bound, measured or declared).
The conversions and LiteRT itself run in the runtimes image (test_tflite_docker)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from coldchain import contract
from coldchain.cli import main
from coldchain.config import IMAGES
from coldchain.engine import ImageInfo, RunResult
from coldchain.environments.bases import ResolvedBase
from coldchain.environments.images import BuiltImage
from coldchain.errors import UsageError
from coldchain.steps.convert import BATCH_DIR, calibration_images
from coldchain.steps.infer import InferRequest, conversion_targets, runtime_arguments
from conftest import ROOT
from fake_engine import FakeEngine
from test_infer import project  # noqa: F401 - fixture: a checkout of its own (infer's scratch under its build/)

sys.path.insert(0, str(ROOT / "scripts"))  # the container side's plain-Python modules (no numpy needed)
from incontainer.common import GoldenMismatch, InsideError  # noqa: E402
from incontainer.golden import quantized  # noqa: E402

IMAGE = BuiltImage(IMAGES["infer-cpu"], "t-bench:cpu", ImageInfo("sha256:abc", ("t-bench:cpu",), {}, 1),
                   ResolvedBase("b", "sha256:b", "local", "3.11.2"), False)


@pytest.fixture
def kit(tmp_path) -> Path:
    """The kit's layout: out/model beside out/data/train."""
    model = tmp_path / "out" / "model"
    model.mkdir(parents=True)
    (model / "model.pb").write_bytes(b"graph")
    (model / "manifest.json").write_text(json.dumps({"model": {"file": "model.pb", "sha256": "ab" * 32}}))
    (tmp_path / "out" / "data" / "train").mkdir(parents=True)
    return model


# --- the conversion request -------------------------------------------------------------------
def test_only_full_int8_needs_calibration_images_and_the_kit_has_its_own(kit, tmp_path):
    assert calibration_images(kit, "tflite-dynamic", None) is None
    assert calibration_images(kit, "tflite-int8", None) == kit.resolve().parent / "data" / "train"
    given = tmp_path / "mine"
    assert calibration_images(kit, "tflite-int8", given) == given


def test_an_adopted_model_without_calibration_images_is_told_the_option(tmp_path):
    alone = tmp_path / "adopted"
    alone.mkdir()
    with pytest.raises(UsageError) as caught:
        calibration_images(alone, "tflite-int8", None)
    assert "tflite-int8" in str(caught.value) and contract.FLAG_CALIBRATION_IMAGES in caught.value.fix


def test_several_targets_convert_in_one_container_and_land_in_their_folders(kit, project, monkeypatch):
    engine = FakeEngine()

    def container(spec):
        arguments = list(spec.command[3:])
        (staging,) = [mount.source for mount in spec.mounts if mount.target == contract.MOUNT_OUT]
        targets = [arguments[i + 1] for i, word in enumerate(arguments) if word == contract.FLAG_RUNTIME]
        for target in targets:
            (staging / target).mkdir()
            (staging / target / contract.CONVERSION_FILE).write_text(json.dumps({"runtime": target}))
        return RunResult(0, json.dumps({target: {} for target in targets}) + "\n", "")

    engine.run_handler = container
    monkeypatch.setattr("coldchain.cli.base.connect", lambda: engine)
    monkeypatch.setattr("coldchain.steps.convert.runtimes_image", lambda *args, **kwargs: IMAGE)
    result = CliRunner().invoke(main, ["convert", "--project", str(project.root), "--target", "tflite-fp32",
                                       "--target", "tflite-int8", str(kit)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (run,) = engine.runs
    arguments = list(run.command[3:])
    assert arguments.count(contract.FLAG_RUNTIME) == 2
    assert arguments[arguments.index(contract.FLAG_CALIBRATION_IMAGES) + 1] == contract.MOUNT_CALIBRATION
    mounted = {mount.target: mount.source for mount in run.mounts}
    assert Path(mounted[contract.MOUNT_CALIBRATION]).resolve() == (kit.parent / "data" / "train").resolve()
    converted = kit / contract.CONVERTED_DIR
    assert sorted(path.name for path in converted.iterdir()) == ["tflite-fp32", "tflite-int8"]
    assert not (converted / BATCH_DIR).exists()
    assert json.loads((converted / "tflite-int8" / contract.CONVERSION_FILE).read_text()) == {"runtime": "tflite-int8"}


def test_an_unknown_target_is_refused_by_name(kit, tmp_path):
    result = CliRunner().invoke(main, ["convert", "--project", str(tmp_path), "--target", "tflite-int4", str(kit)])
    assert result.exit_code == contract.Exit.USAGE and "tflite-int8" in result.output


# --- infer's options --------------------------------------------------------------------------
@pytest.mark.parametrize("runtime, precision, expected", [
    ("tflite", "int8", ("tflite-int8",)), ("tflite", "fp32", ("tflite-fp32",)),
    ("onnxruntime", "fp32", ("onnxruntime",)), ("fastest", "fp32", contract.CONVERTED_RUNTIMES),
    ("openvino", "int8", ("openvino-int8",)), ("onnxruntime", "int8", ("onnxruntime-int8",)),
    # fastest considers a quantized model only where its precision is declared: then the artefacts that
    # compute it (int8: TFLite's, OpenVINO's and ONNX Runtime's; fp16: TFLite's alone).
    ("fastest", "bf16", contract.CONVERTED_RUNTIMES),
    ("fastest", "int8", ("tflite-int8", "onnxruntime-int8", "openvino-int8")),
    ("fastest", "fp16", ("tflite-fp16",))])
def test_each_runtime_and_precision_reads_its_own_conversion(runtime, precision, expected):
    assert conversion_targets(InferRequest(model=Path("m"), runtime=runtime, precision=precision)) == expected


@pytest.mark.parametrize("runtime, precision, fix", [("tflite", "bf16", "fp32"), ("openvino", "fp16", "tflite"),
                                                     ("onnxruntime", "dynamic", "tflite")])
def test_a_precision_the_runtime_has_no_conversion_for_is_refused(runtime, precision, fix):
    with pytest.raises(UsageError) as caught:
        conversion_targets(InferRequest(model=Path("m"), runtime=runtime, precision=precision))
    assert fix in caught.value.fix


def test_xnnpack_off_and_a_declared_bound_reach_the_container():
    request = InferRequest(model=Path("m"), runtime="tflite", precision="int8", xnnpack=False, golden_bound=0.02)
    assert runtime_arguments(request) == [contract.FLAG_NO_XNNPACK, contract.FLAG_GOLDEN_BOUND, "0.02"]
    assert runtime_arguments(InferRequest(model=Path("m"), runtime="tflite", precision="int8")) == []


def test_a_bound_on_an_fp32_run_is_refused():
    with pytest.raises(UsageError) as caught:
        runtime_arguments(InferRequest(model=Path("m"), runtime="tflite", precision="fp32", golden_bound=0.02))
    assert contract.FLAG_GOLDEN_BOUND in str(caught.value)


def test_the_cli_passes_tflite_settings_through(kit, project, tmp_path, monkeypatch):
    engine, converted = FakeEngine(), []
    engine.run_handler = lambda spec: RunResult(0, json.dumps({"golden": {"ok": True}}) + "\n", "")
    monkeypatch.setattr("coldchain.cli.base.connect", lambda: engine)
    monkeypatch.setattr("coldchain.steps.infer.runtimes_image", lambda *args, **kwargs: IMAGE)
    monkeypatch.setattr("coldchain.steps.infer.ensure_converted",
                        lambda engine, project, model, target, image, **kwargs: converted.append(target))
    result = CliRunner().invoke(main, ["infer", "--project", str(project.root), "--no-golden-cache",
                                       "--model", str(kit), "--runtime", "tflite", "--precision", "dynamic",
                                       "--no-xnnpack", "--golden-bound", "0.05", "--output", str(tmp_path / "p.jsonl"),
                                       "--golden-only"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    arguments = list(engine.runs[0].command[3:])
    assert converted == ["tflite-dynamic"]
    assert arguments[arguments.index(contract.FLAG_PRECISION) + 1] == "dynamic"
    assert contract.FLAG_NO_XNNPACK in arguments and arguments[arguments.index(contract.FLAG_GOLDEN_BOUND) + 1] == "0.05"


# --- the quantized golden check's rule ----------------------------------------------------------
GOLDEN = [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]
QUANTIZED = [[0.68, 0.22, 0.1], [0.1, 0.32, 0.58]]  # 0.02 off at most, same top-1


def test_the_measured_bound_is_the_conversions_error_times_the_factor():
    measured = quantized.measure(GOLDEN, QUANTIZED)
    assert measured["top1_agreement"] == 1.0 and measured["max_prob_error"] == pytest.approx(0.02)
    bound = quantized.bound_from_measurement(measured, "int8", factor=3.0, floor=1e-3)
    assert bound["max_prob_error"] == pytest.approx(0.06) and bound["min_top1_agreement"] == 1.0
    assert bound["source"] == quantized.BOUND_MEASURED
    exact = quantized.bound_from_measurement(quantized.measure(GOLDEN, GOLDEN), "fp16", factor=3.0, floor=1e-3)
    assert exact["max_prob_error"] == 1e-3  # an exact conversion still gets the floor


def test_within_the_bound_passes_and_names_the_numbers():
    bound = quantized.bound_from_measurement(quantized.measure(GOLDEN, QUANTIZED), "int8")
    summary = quantized.check(bound, GOLDEN, QUANTIZED, "/m", "tflite int8")
    assert summary["ok"] and summary["top1"] == {"agree": 2, "count": 2, "ok": True}
    assert summary["max_prob_error"] == pytest.approx(0.02)


def test_past_a_declared_bound_refuses_with_the_golden_exit_naming_the_stage():
    bound = quantized.resolve_bound(None, 0.01, "int8", "x")
    with pytest.raises(GoldenMismatch) as caught:
        quantized.check(bound, GOLDEN, QUANTIZED, "/m", "tflite int8")
    assert caught.value.exit_code == contract.Exit.GOLDEN_MISMATCH == 4
    assert f"stage {contract.STAGE_RUN}" in str(caught.value) and "declared bound 0.01" in str(caught.value)


def test_a_flipped_top1_refuses_even_within_the_probability_bound():
    flipped = [[0.45, 0.5, 0.05], [0.1, 0.3, 0.6]]
    bound = quantized.resolve_bound(None, 0.5, "int8", "x")
    with pytest.raises(GoldenMismatch) as caught:
        quantized.check(bound, [[0.5, 0.45, 0.05], [0.1, 0.3, 0.6]], flipped, "/m", "tflite int8")
    assert "top-1 agrees on 0.500" in str(caught.value)


def test_a_declared_bound_keeps_the_measured_top1_agreement():
    recorded = quantized.bound_from_measurement({"max_prob_error": 0.1, "top1_agreement": 0.9, "images": 10}, "int8")
    assert quantized.resolve_bound(recorded, 0.2, "int8", "x")["min_top1_agreement"] == 0.9
    assert quantized.resolve_bound(recorded, None, "int8", "x") is recorded


@pytest.mark.parametrize("recorded, declared", [(None, None), ({"source": "measured"}, None), (None, 0.0), (None, 2.0)])
def test_no_usable_bound_is_refused(recorded, declared):
    with pytest.raises(InsideError):
        quantized.resolve_bound(recorded, declared, "int8", "conversion.json")


def test_a_shape_mismatch_is_named_not_compared():
    with pytest.raises(InsideError) as caught:
        quantized.measure(GOLDEN, [[0.5, 0.5]])
    assert "shape" in str(caught.value)
