"""`coldchain infer` on the host: the image the runtime runs in (the inference image, or the runtimes
image with the model's conversions made first), the golden check kept from an earlier run, the inputs
mounted read-only, and the summary's start-up completed with the host's share of the wait."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..config import Project
from ..contract import (CONVERTED_RUNTIMES, DEFAULT_BF16_TOLERANCE, FLAG_BF16_TOLERANCE, FLAG_GOLDEN_VERIFIED,
                        FLAG_PRECISION, FLAG_RUNTIME, MOUNT_GOLDEN_VERIFIED, MOUNT_INPUTS, MOUNT_MODEL,
                        PRECISION_FP32, RUNTIME_FASTEST, RUNTIME_TENSORFLOW, STARTUP_KEY)
from ..engine import Engine
from ..environments.images import BuiltImage
from ..errors import UsageError
from .convert import ensure_converted, runtimes_image
from .golden_cache import cache_file, remember
from .model_argument import model_directory
from .pipeline import StepConfig, StepSettings, ensure_images, run_step


@dataclass(frozen=True)
class InferRequest:
    model: Path
    output: Path
    inputs: tuple[Path, ...] = ()
    runtime: str = RUNTIME_TENSORFLOW
    precision: str = PRECISION_FP32
    bf16_tolerance: float = DEFAULT_BF16_TOLERANCE
    golden_cache: bool = True
    settings: StepSettings = StepSettings()
    entered: float | None = None  # seconds from the process's start to the command: the host's interpreter and imports


def runtime_image(engine: Engine, project: Project, request: InferRequest, model: Path) -> tuple[BuiltImage, str]:
    """The image and role the runtime runs in; for a converted runtime, the model's conversions made
    (or made again) first where missing or stale."""
    settings = request.settings
    if request.runtime == RUNTIME_TENSORFLOW:
        return ensure_images(engine, project, "infer", settings.device, settings.prefix), "infer"
    image = runtimes_image(engine, project, settings.prefix)
    for converted in (CONVERTED_RUNTIMES if request.runtime == RUNTIME_FASTEST else (request.runtime,)):
        ensure_converted(engine, project, model, converted, image, memory=settings.memory, prefix=settings.prefix,
                         timeout_s=settings.timeout_s)
    return image, "runtimes"


def kept_check(project: Project, request: InferRequest, model: Path, image: BuiltImage) -> Path | None:
    """Where this model's golden check in this image, runtime and precision is kept (--golden-cache);
    None where none may be used: --no-golden-cache, or fastest, which checks every runtime itself."""
    if not request.golden_cache or request.runtime == RUNTIME_FASTEST:
        return None
    return cache_file(project, model, image.info.id, {"name": request.runtime, "precision": request.precision,
                                                      "bf16_tolerance": request.bf16_tolerance})


def input_mounts(inputs: tuple[Path, ...]) -> tuple[dict, list[str]]:
    """Each input mounted read-only: {mount point: host path}, and the paths the container is told."""
    mounts = {f"{MOUNT_INPUTS}/{index}": path.resolve() for index, path in enumerate(inputs)}
    return mounts, list(mounts)


def with_startup(stdout: str, entered: float | None, timing: dict, started: float) -> str:
    """infer's summary with the host's share of the start-up added to the container's phases
    (contract.STARTUP_PHASES): what the user waits for, from typing the command to its output."""
    try:
        summary = json.loads(stdout)
    except ValueError:
        return stdout.strip()
    inside = summary.get(STARTUP_KEY)
    if not isinstance(inside, dict) or entered is None or "container" not in timing:
        return stdout.strip()
    process = inside.get("container_process_s") or 0.0
    inside.update(host_cli_s=round(entered, 3), host_checks_s=round(timing["checks"], 3),
                  # docker's create, start and exit around the process; then removal and the output's move
                  container_start_s=round(max(0.0, timing["container"] - process), 3),
                  finish_s=round(max(0.0, timing["step"] - timing["container"]), 3),
                  total_s=round(entered + time.perf_counter() - started, 3))
    return json.dumps(summary, sort_keys=True)


def infer(connect: Callable[[], Engine], project: Project, request: InferRequest) -> str:
    """Predict; infer's summary (JSON), its start-up completed. The engine is connected only after the
    request's own checks, so a wrong model path is named at once."""
    started, timing = time.perf_counter(), {}
    settings = request.settings
    mounts, targets = input_mounts(request.inputs)
    fmt = ["--format", "csv"] if request.output.suffix == ".csv" else ["--format", "jsonl"]
    source = model_directory(request.model)
    if request.runtime != RUNTIME_TENSORFLOW and settings.device != "cpu":
        raise UsageError(f"--runtime {request.runtime} runs on the CPU here", fix="drop --device cuda")
    engine = connect()
    image, role = runtime_image(engine, project, request, source)
    kept = kept_check(project, request, source, image)
    verified = {MOUNT_GOLDEN_VERIFIED: kept} if kept is not None and kept.is_file() else {}
    arguments = ["--model", MOUNT_MODEL, *fmt, FLAG_RUNTIME, request.runtime, FLAG_PRECISION, request.precision,
                 FLAG_BF16_TOLERANCE, str(request.bf16_tolerance),
                 *([FLAG_GOLDEN_VERIFIED, MOUNT_GOLDEN_VERIFIED] if verified else []), *settings.arguments, *targets]
    step = StepConfig(name="infer", role=role, module="infer", output=request.output.resolve(),
                      inputs={MOUNT_MODEL: source, **verified, **mounts}, arguments=tuple(arguments),
                      device=settings.device, memory=settings.memory, prefix=settings.prefix,
                      timeout_s=settings.timeout_for("infer"))
    timing["checks"] = time.perf_counter() - started
    mark = time.perf_counter()
    summary = run_step(engine, project, step, image, timing=timing)
    timing["step"] = time.perf_counter() - mark
    if kept is not None:
        try:
            remember(kept, json.loads(summary))
        except ValueError:
            pass  # not a summary (extra arguments asked for --help): nothing to keep
    return with_startup(summary, request.entered, timing, started)
