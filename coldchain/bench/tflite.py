"""TensorFlow Lite and int8 in the bench: the bench's plain graph converted (tflite-fp32, and full int8
for TFLite, OpenVINO (NNCF) and ONNX Runtime (static QDQ), calibrated as make quantize does, in one
container) and timed (TFLite with XNNPACK on and off) beside TensorFlow fp32 in the same run; each row
with its top-1 agreement with TensorFlow fp32 (golden and held-out images). A section of its own, so it
can be measured alone (bench --no-inference --no-images ...)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..config import BENCH_IMAGE, IMAGES, Project
from ..contract import (FLAG_BATCH, FLAG_IMAGES, FLAG_MODEL, FLAG_NO_XNNPACK, FLAG_PRECISION, FLAG_REPEATS,
                        FLAG_RUNTIME, MOUNT_IMAGES, MOUNT_MODEL, PRECISION_FP32, PRECISION_INT8,
                        QUANTIZED_MIN_TOP1_FOR_SPEED, RUNTIME_ONNXRUNTIME, RUNTIME_OPENVINO, RUNTIME_TENSORFLOW,
                        RUNTIME_TFLITE, per_run_target)
from ..engine import Engine
from ..environments.images import BuildOptions, build_images, ensure_image
from ..errors import ColdchainError
from ..steps.convert import convert, stale_because
from ..steps.runner import Image, ModuleRun, last_json, run_module
from .inference import InferenceBenchOptions, bench_models

log = logging.getLogger(__name__)
# (row, runtime, precision, XNNPACK): TensorFlow fp32 first, the baseline every row is set against.
ROWS = (("tensorflow_fp32", RUNTIME_TENSORFLOW, PRECISION_FP32, True),
        ("tflite_fp32", RUNTIME_TFLITE, PRECISION_FP32, True),
        ("tflite_fp32_no_xnnpack", RUNTIME_TFLITE, PRECISION_FP32, False),
        ("tflite_int8", RUNTIME_TFLITE, PRECISION_INT8, True),
        ("openvino_int8", RUNTIME_OPENVINO, PRECISION_INT8, True),
        ("onnxruntime_int8", RUNTIME_ONNXRUNTIME, PRECISION_INT8, True))
QUICK_ROWS = ("tensorflow_fp32", "tflite_fp32", "tflite_int8")
CONVERSION_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class TfliteBenchOptions:
    run: Path  # the training run the bench model is frozen from; its images in ../data
    out: Path  # the bench's models (shared with the inference bench)
    input_size: int = 224
    batches: tuple[int, ...] = (1, 8, 32)
    repeats: int = 10
    quick: bool = False  # CI: 64 px, batches 1-2, two repeats, no XNNPACK-off row
    prefix: str = "coldchain"
    run_id: str = "coldchain-bench"


def rows(quick: bool) -> tuple:
    return tuple(row for row in ROWS if not quick or row[0] in QUICK_ROWS)


def converted(engine: Engine, project: Project, model: Path, image, options: TfliteBenchOptions) -> None:
    """The artefacts the rows run (tflite-fp32, the int8 ones) of the bench model in one container, where
    missing or stale; int8 calibrated on the run's training images (the kit's), else on the golden inputs."""
    wanted = dict.fromkeys(per_run_target(runtime, precision) for _, runtime, precision, _ in rows(options.quick))
    targets = tuple(target for target in wanted if target and stale_because(model, target, image))
    if not targets:
        return
    train = options.run.parent / "data" / "train"
    convert(engine, project, model, targets, image, memory=ModuleRun.memory, prefix=options.prefix,
            timeout_s=CONVERSION_TIMEOUT_S,
            calibration=train if train.is_dir() else None, on_golden=not train.is_dir())


def bench_tflite(engine: Engine, project: Project, options: TfliteBenchOptions) -> dict:
    train, infer = build_images(engine, project, [IMAGES["train-cpu"], IMAGES["infer-cpu"]],
                                BuildOptions(prefix=options.prefix))
    bench_image = ensure_image(engine, project, BENCH_IMAGE, BuildOptions(prefix=options.prefix))
    size = 64 if options.quick else options.input_size
    model = bench_models(engine, project, InferenceBenchOptions(run=options.run, out=options.out, prefix=options.prefix,
                                                                run_id=options.run_id), train, size, ("plain",))["plain"]
    converted(engine, project, model, bench_image, options)
    held_out = options.run.parent / "data" / "val"
    batches = (1, 2) if options.quick else options.batches
    measured = {}
    for name, runtime, precision, xnnpack in rows(options.quick):
        arguments = [FLAG_MODEL, MOUNT_MODEL, FLAG_RUNTIME, runtime, FLAG_PRECISION, precision, FLAG_REPEATS,
                     str(2 if options.quick else options.repeats), *[arg for b in batches for arg in (FLAG_BATCH, str(b))],
                     *([] if xnnpack else [FLAG_NO_XNNPACK])]
        inputs = {MOUNT_MODEL: model}
        if per_run_target(runtime, precision) and held_out.is_dir():
            inputs[MOUNT_IMAGES] = held_out
            arguments += [FLAG_IMAGES, MOUNT_IMAGES]
        image = infer if runtime == RUNTIME_TENSORFLOW else bench_image
        log.info("bench: %s (%s, batches %s)", name, image.tag, list(batches))
        run = ModuleRun(image=Image.of(image), module="bench", arguments=tuple(arguments), what=f"bench {name}",
                        inputs=inputs, run_id=options.run_id, timeout_s=3600.0)
        try:
            measured[name] = last_json(run_module(engine, run), run)
        except ColdchainError as error:  # one broken row must not hide the others
            log.warning("bench: %s failed: %s", name, error.message)
            measured[name] = {"error": error.message, "golden": {"ok": False}, "batches": []}
    return summarize_tflite(measured, size)


def summarize_tflite(rows: dict, size: int) -> dict:
    """Per row: golden check, speed per batch, effective precision, XNNPACK, top-1 agreement with
    TensorFlow fp32; and the fastest int8 row at batch 8 over TensorFlow fp32's speed there."""
    table = {}
    for name, report in rows.items():
        table[name] = {"golden_ok": bool(report.get("golden", {}).get("ok")),
                       "batches": {str(row["batch"]): row for row in report.get("batches", [])},
                       **{key: report[key] for key in ("runtime", "top1_agreement_vs_tensorflow_fp32", "conversion",
                                                       "error") if key in report}}

    def at_8(name: str):
        batches = table.get(name, {}).get("batches", {})
        row = batches.get("8") or next(iter(batches.values()), None)
        return row["images_per_second"] if row and table[name]["golden_ok"] else None

    tf32 = at_8("tensorflow_fp32")
    int8 = {name: at_8(name) for name in table
            if ((table[name].get("runtime") or {}).get("precision_effective") == PRECISION_INT8) and at_8(name)}
    # Speed counts only where the answers stay fp32's: a row passing just the bound it measured on itself
    # can be fast and wrong.
    agreeing = {name: speed for name, speed in int8.items()
                if agreement_for_speed(table[name]) >= QUANTIZED_MIN_TOP1_FOR_SPEED}
    best = max(agreeing, key=agreeing.get) if agreeing else None
    return {"input_size": size, "rows": table, "min_top1_agreement_for_speed": QUANTIZED_MIN_TOP1_FOR_SPEED,
            "int8_too_far_from_fp32": sorted(set(int8) - set(agreeing)),
            "fastest_int8_at_batch_8": {"variant": best, "images_per_second": int8[best],
                                        "over_tensorflow_fp32": round(int8[best] / tf32, 3) if tf32 else None}
            if best else None}


def agreement_for_speed(row: dict) -> float:
    """A row's top-1 agreement with TensorFlow fp32: on the held-out images where measured, else the golden."""
    agreement = row.get("top1_agreement_vs_tensorflow_fp32") or {}
    held = agreement.get("held_out") or {}
    if held.get("images"):
        return held["agree"] / held["images"]
    return float(agreement.get("golden_images", 0.0))
