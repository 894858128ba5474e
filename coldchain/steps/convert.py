"""A model converted for another runtime, kept in MODEL/converted/<runtime>/: made in the runtimes
image (its own hashed lock) and made again whenever the model or that lock changed."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from ..config import RUNTIMES_IMAGE, Project
from ..confine import read_manifest
from ..contract import (CALIBRATION_TARGETS, CONVERSION_FILE, CONVERTED_DIR, FLAG_CALIBRATE_ON_GOLDEN,
                        FLAG_CALIBRATION_IMAGES, FLAG_HELD_OUT_IMAGES, FLAG_MODEL, FLAG_RUNTIME,
                        MOUNT_CALIBRATION, MOUNT_IMAGES, MOUNT_MODEL, RUNTIME_ONNXRUNTIME, int8_target)
from ..engine import Engine
from ..environments.images import BuildOptions, BuiltImage, ensure_image
from ..errors import UsageError
from .model_argument import model_directory
from .pipeline import StepConfig, replace_output, run_step
from .runner import DEFAULT_TIMEOUT_S

log = logging.getLogger(__name__)
LOCK_LABEL = "io.coldchain.lock.sha256"
# tf2onnx runs Grappler over the whole graph and holds several copies of the weights: converting an
# ImageNet ResNet v1 50 (1000 classes) peaked at 10 GB resident here, past the kit's default 8g.
ONNX_CONVERSION_MEMORY = "16g"
ONNX_CONVERTERS = (RUNTIME_ONNXRUNTIME, int8_target(RUNTIME_ONNXRUNTIME))  # the steps that run tf2onnx
BATCH_DIR = ".batch"  # converted/.batch/<target>/: several targets made in one container, then moved
_UNITS = {"": 1, "b": 1, "k": 2 ** 10, "m": 2 ** 20, "g": 2 ** 30}


def memory_bytes(memory: str) -> int:
    """Docker's memory notation ("8g", "512m", "1073741824") in bytes."""
    text = memory.strip().lower()
    unit = text[-1] if text and text[-1] in _UNITS else ""
    try:
        return int(float(text[:-1] if unit else text) * _UNITS[unit])
    except ValueError:
        raise UsageError(f"memory limit {memory!r} is not a size", fix="write it as Docker does: 8g, 512m") from None


def memory_for(runtime: str, memory: str) -> str:
    """The container memory a step running `runtime` gets: the caller's, raised where the converter needs it."""
    if runtime in ONNX_CONVERTERS and memory_bytes(memory) < memory_bytes(ONNX_CONVERSION_MEMORY):
        return ONNX_CONVERSION_MEMORY
    return memory


def runtimes_image(engine: Engine, project: Project, prefix: str) -> BuiltImage:
    return ensure_image(engine, project, RUNTIMES_IMAGE, BuildOptions(prefix=prefix))


def converted_dir(model: Path, runtime: str, into: Path | None = None) -> Path:
    """converted/<runtime>/ beside the model, or <into>/<runtime>/ (the drift test's own conversions)."""
    return (into if into is not None else model / CONVERTED_DIR) / runtime


def stale_because(model: Path, runtime: str, image: BuiltImage, into: Path | None = None) -> str | None:
    """Why MODEL's conversion for `runtime` must be made again, or None when it is current. The
    container re-checks every file's sha256 before using it."""
    record_path = converted_dir(model, runtime, into) / CONVERSION_FILE
    try:
        record = json.loads(record_path.read_text())
        manifest = read_manifest(model) or {}
    except FileNotFoundError:
        return "no conversion yet"
    except (OSError, ValueError) as error:
        return f"{record_path} is unreadable ({error})"
    if not isinstance(record, dict):
        return f"{record_path} is not a conversion record"
    if record.get("source_sha256") != (manifest.get("model") or {}).get("sha256"):
        return "the model changed since it was converted"
    if record.get("lock_sha256") != image.info.labels.get(LOCK_LABEL):
        return "the runtimes image's lock changed since (another converter version)"
    return None


def calibration_images(model: Path, target: str, given: Path | None) -> Path | None:
    """The representative images `target` needs: the ones given, else the kit's training images
    (data/train beside the model folder, where make puts them); None where the target needs none."""
    if target not in CALIBRATION_TARGETS:
        return None
    if given is not None:
        return given
    kit = model.resolve().parent / "data" / "train"
    if kit.is_dir():
        return kit
    raise UsageError(f"{target} needs representative images and {model} has no data/train beside it",
                     fix=f"pass {FLAG_CALIBRATION_IMAGES} DIR: a folder of images like the model's training data")


def held_out_images(model: Path, targets: tuple[str, ...]) -> Path | None:
    """The kit's held-out images (data/val beside the model folder) where a full int8 target measures
    its top-1 agreement on them, else None."""
    held_out = model_directory(model).resolve().parent / "data" / "val"
    return held_out if held_out.is_dir() and any(target in CALIBRATION_TARGETS for target in targets) else None


def convert(engine: Engine, project: Project, model: Path, runtimes: str | tuple[str, ...], image: BuiltImage, *,
            memory: str, prefix: str, timeout_s: float | None, calibration: Path | None = None,
            into: Path | None = None, on_golden: bool = False, held_out: Path | None = None) -> str:
    """Convert the model in the runtimes image into MODEL/converted/<target>/ (or `into`/<target>/),
    each swapped in whole; `runtimes` names runtimes, TFLite or int8 targets (contract.CONVERSION_TARGETS),
    several in one container. on_golden: without `calibration`, full int8 calibrates on the golden inputs.
    held_out: images the int8 targets measure top-1 agreement on besides the golden ones."""
    model = model_directory(model)
    targets = tuple(dict.fromkeys((runtimes,) if isinstance(runtimes, str) else runtimes))
    root = into if into is not None else model / CONVERTED_DIR
    output = converted_dir(model, targets[0], root) if len(targets) == 1 else root / BATCH_DIR
    inputs, arguments = {MOUNT_MODEL: model}, (FLAG_MODEL, MOUNT_MODEL)
    for target in targets:
        arguments += (FLAG_RUNTIME, target)
        if on_golden and calibration is None and target in CALIBRATION_TARGETS:
            arguments += () if FLAG_CALIBRATE_ON_GOLDEN in arguments else (FLAG_CALIBRATE_ON_GOLDEN,)
            continue
        images = calibration_images(model, target, calibration)
        if images is not None and MOUNT_CALIBRATION not in inputs:
            inputs[MOUNT_CALIBRATION] = images
            arguments += (FLAG_CALIBRATION_IMAGES, MOUNT_CALIBRATION)
    if held_out is not None:
        inputs[MOUNT_IMAGES] = held_out
        arguments += (FLAG_HELD_OUT_IMAGES, MOUNT_IMAGES)
    step = StepConfig(name="convert", role="runtimes", module="convert", output=output, inputs=inputs,
                      arguments=arguments, memory=max((memory_for(target, memory) for target in targets),
                                                      key=memory_bytes), prefix=prefix,
                      timeout_s=timeout_s or DEFAULT_TIMEOUT_S, output_is_file=False)
    try:
        stdout = run_step(engine, project, step, image)
    except PermissionError as error:
        raise UsageError(f"{output.parent}: cannot write the {', '.join(targets)} conversion beside the model "
                         f"({error})", fix="copy the model directory somewhere writable, or make it writable") from None
    if len(targets) > 1:
        for target in targets:  # the container wrote out/<target>/ for each
            replace_output(output / target, converted_dir(model, target, root))
        shutil.rmtree(output, ignore_errors=True)
    return stdout


def ensure_converted(engine: Engine, project: Project, model: Path, runtime: str, image: BuiltImage, *,
                     memory: str, prefix: str, timeout_s: float | None) -> None:
    reason = stale_because(model_directory(model), runtime, image)
    if reason:
        log.info("converting %s for %s: %s", model, runtime, reason)
        convert(engine, project, model, runtime, image, memory=memory, prefix=prefix, timeout_s=timeout_s,
                held_out=held_out_images(model, (runtime,)))
    else:
        log.info("%s conversion of %s is current", runtime, model)
