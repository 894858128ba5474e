"""The training chain on the host: data, train (or fine-tune from a checkpoint) and freeze, each a
request turned into its container step in the training image, inputs mounted read-only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import Project
from ..contract import (FLAG_CHECKPOINT_PATH, FLAG_DATA, FLAG_RUN, FLAG_THREADS, MOUNT_CHECKPOINT, MOUNT_DATA,
                        MOUNT_RUN, RUN_METRICS_FILE)
from ..engine import Engine
from ..errors import UsageError
from .model_finish import model_finisher
from .pipeline import StepConfig, StepSettings, ensure_images, run_step
from .threads import freeze_arguments


@dataclass(frozen=True)
class DataRequest:
    out: Path
    settings: StepSettings = StepSettings()


@dataclass(frozen=True)
class TrainRequest:
    data: Path
    out: Path
    checkpoint: Path | None = None  # fine-tune from this checkpoint (file prefix or directory)
    settings: StepSettings = StepSettings()


@dataclass(frozen=True)
class FreezeRequest:
    run: Path
    out: Path
    settings: StepSettings = StepSettings()
    sign_key: Path | None = None  # sign the model directory (model.sig) with this EC private key


def run_training_step(engine: Engine, project: Project, name: str, output: Path, inputs: dict, arguments,
                      settings: StepSettings, sign_key: Path | None = None) -> str:
    """One step of the chain in the training image; the container's stdout. A model directory (freeze)
    gets the image's SBOM and, with `sign_key`, its signature before it is put in place."""
    image = ensure_images(engine, project, "train", settings.device, settings.prefix)
    finish = model_finisher(project.path(image.spec.locked.lock), sign_key) if name == "freeze" else None
    step = StepConfig(name=name, role="train", module=name, output=output.resolve(), inputs=inputs,
                      arguments=tuple(arguments), device=settings.device, memory=settings.memory,
                      prefix=settings.prefix, timeout_s=settings.timeout_for(name), finish=finish)
    return run_step(engine, project, step, image)


def make_data(engine: Engine, project: Project, request: DataRequest) -> Path:
    run_training_step(engine, project, "data", request.out, {}, request.settings.arguments, request.settings)
    return request.out


def checkpoint_mount(checkpoint: Path) -> tuple[Path, str]:
    """A checkpoint prefix names several files: the directory to mount, and the path the container is told."""
    source = checkpoint.resolve()
    directory = source if source.is_dir() else source.parent
    if not directory.exists():
        raise UsageError(f"{checkpoint}: checkpoint not found", fix="pass a checkpoint file prefix or directory")
    return directory, MOUNT_CHECKPOINT if source.is_dir() else f"{MOUNT_CHECKPOINT}/{source.name}"


def train(engine: Engine, project: Project, request: TrainRequest) -> str | None:
    """Train (or fine-tune); the run's metrics as the container wrote them, if it did."""
    inputs = {MOUNT_DATA: request.data.resolve()}
    arguments = [FLAG_DATA, MOUNT_DATA, *request.settings.arguments]
    if request.checkpoint is not None:
        inputs[MOUNT_CHECKPOINT], target = checkpoint_mount(request.checkpoint)
        arguments += [FLAG_CHECKPOINT_PATH, target]
    run_training_step(engine, project, "train", request.out, inputs, arguments, request.settings)
    metrics = request.out / RUN_METRICS_FILE
    return metrics.read_text().strip() if metrics.exists() else None


def freeze(engine: Engine, project: Project, request: FreezeRequest) -> Path:
    """Freeze with the thread settings `make bench` found fastest and the machine it measured them on
    (infer applies them only on a like one), unless the arguments set them."""
    extra = request.settings.arguments
    threads = [] if any(arg.startswith(FLAG_THREADS) for arg in extra) else freeze_arguments(project)
    run_training_step(engine, project, "freeze", request.out, {MOUNT_RUN: request.run.resolve()},
                      [FLAG_RUN, MOUNT_RUN, *threads, *extra], request.settings, request.sign_key)
    return request.out
