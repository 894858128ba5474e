"""`coldchain infer` on the host: the image the runtime runs in (the inference image, or the runtimes
image with the model's conversions made first), the golden check kept from an earlier run, the inputs
mounted read-only (an image file by its folder), the summary's start-up completed with the host's share
of the wait, and, without --output, the predictions read back from a scratch file for people."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..config import Project
from ..confine import check_input
from ..contract import (CONVERTED_RUNTIMES, DEFAULT_BF16_TOLERANCE, FLAG_BATCH_SIZE, FLAG_BF16_TOLERANCE, FLAG_FORMAT,
                        FLAG_GOLDEN_BOUND, FLAG_GOLDEN_ONLY, FLAG_GOLDEN_VERIFIED, FLAG_INTER_OP_THREADS,
                        FLAG_INTRA_OP_THREADS, FLAG_MODEL, FLAG_NO_XNNPACK, FLAG_ON_BAD_IMAGE, FLAG_PRECISION,
                        FLAG_RUNTIME, FLAG_TOP_K, MOUNT_GOLDEN_VERIFIED, MOUNT_INPUTS, MOUNT_MODEL, PRECISION_FP32,
                        QUANTIZED_PRECISIONS, RUNTIME_FASTEST, RUNTIME_TENSORFLOW, RUNTIME_TFLITE, STARTUP_KEY,
                        TFLITE_PRECISIONS, artefact_target, quantized_runtimes)
from . import signing
from ..engine import Engine
from ..environments.images import BuildOptions, BuiltImage, ensure_image
from ..environments.matrix import environment_image_spec
from ..errors import UsageError
from ..fsutil import writing
from ..owner import Owner
from .convert import ensure_converted, runtimes_image
from .golden_cache import cache_file, remember
from .label_image import for_people
from .model_argument import model_directory
from .pipeline import StepConfig, StepSettings, ensure_images, run_step
from .threads import Machine, ThreadChoice, choose_threads, manifest_inference

log = logging.getLogger(__name__)
# The container's infer options that take a value (scripts/incontainer/steps/infer.py, parse_args) and
# that the host passes on: the word after one is its value, not an image.
VALUE_OPTIONS = (FLAG_FORMAT, FLAG_TOP_K, FLAG_BATCH_SIZE, FLAG_ON_BAD_IMAGE)
SCRATCH_PREDICTIONS = "predictions.jsonl"  # without --output: read back, printed, removed

@dataclass(frozen=True)
class InferRequest:
    model: Path
    output: Path | None = None  # None: the predictions printed for people (see infer)
    inputs: tuple[Path, ...] = ()
    runtime: str = RUNTIME_TENSORFLOW
    precision: str = PRECISION_FP32
    bf16_tolerance: float = DEFAULT_BF16_TOLERANCE
    golden_cache: bool = True
    xnnpack: bool = True  # --runtime tflite: XNNPACK on (--no-xnnpack: off)
    golden_bound: float | None = None  # quantized precisions: a declared probability-error bound
    settings: StepSettings = StepSettings()
    trust: tuple[Path, ...] = ()  # public keys or certificates model.sig must verify against (--trust)
    entered: float | None = None  # seconds from the process's start to the command: the host's interpreter and imports
    threads: tuple[int, int] | None = None  # --threads: the user's; None: chosen by threads.choose_threads
    env_name: str | None = None  # --env: a drift-matrix environment's image instead of infer-cpu (e.g. arm64)
    matrix_path: Path = Path("drift/matrix.toml")


def runtime_image(engine: Engine, project: Project, request: InferRequest, model: Path) -> tuple[BuiltImage, str]:
    """The image and role the runtime runs in; for a converted runtime, the model's conversions made
    (or made again) first where missing or stale."""
    settings = request.settings
    if request.env_name:
        if request.runtime != RUNTIME_TENSORFLOW:
            raise UsageError(f"--env {request.env_name} runs TensorFlow; --runtime {request.runtime} has its own image",
                             fix="drop --env, or use --runtime tensorflow")
        spec = environment_image_spec(project, request.matrix_path, request.env_name, "--env")
        return ensure_image(engine, project, spec, BuildOptions(prefix=settings.prefix)), "infer"
    if request.runtime == RUNTIME_TENSORFLOW:
        return ensure_images(engine, project, "infer", settings.device, settings.prefix), "infer"
    image = runtimes_image(engine, project, settings.prefix)
    for converted in conversion_targets(request):
        try:
            ensure_converted(engine, project, model, converted, image, memory=settings.memory, prefix=settings.prefix,
                             timeout_s=settings.timeout_s)
        except UsageError as error:  # fastest: a candidate with no calibration images is refused in the container
            if request.runtime != RUNTIME_FASTEST:
                raise
            log.warning("fastest: no %s conversion: %s", converted, error.message)
    return image, "runtimes"


def conversion_targets(request: InferRequest) -> tuple[str, ...]:
    """The conversions a request reads: every converted runtime for fastest (a declared quantized
    precision: the artefacts of the runtimes that compute it), tflite-<precision> for TFLite,
    <runtime>-int8 for OpenVINO and ONNX Runtime at int8."""
    if request.runtime == RUNTIME_FASTEST:
        if request.precision in QUANTIZED_PRECISIONS:
            return tuple(artefact_target(runtime, request.precision) for runtime in quantized_runtimes(request.precision))
        return CONVERTED_RUNTIMES
    if request.runtime == RUNTIME_TFLITE:
        if request.precision not in TFLITE_PRECISIONS:
            raise UsageError(f"--runtime {RUNTIME_TFLITE} has no {request.precision} conversion",
                             fix=f"declare {FLAG_PRECISION} {' or '.join(TFLITE_PRECISIONS)}")
    elif request.precision in QUANTIZED_PRECISIONS and request.runtime not in quantized_runtimes(request.precision):
        raise UsageError(f"{FLAG_PRECISION} {request.precision} is a conversion for "
                         f"{' or '.join(quantized_runtimes(request.precision))} here",
                         fix=f"add {FLAG_RUNTIME} {RUNTIME_TFLITE}")
    return (artefact_target(request.runtime, request.precision),)


def runtime_arguments(request: InferRequest) -> list[str]:
    """The runtime's own settings the container is told: XNNPACK off, a declared golden bound."""
    if request.golden_bound is not None and request.precision not in QUANTIZED_PRECISIONS:
        raise UsageError(f"{FLAG_GOLDEN_BOUND} judges a quantized model",
                         fix=f"declare {FLAG_PRECISION} {' or '.join(QUANTIZED_PRECISIONS)} with {FLAG_RUNTIME} "
                             f"{RUNTIME_TFLITE}, or drop {FLAG_GOLDEN_BOUND}")
    return [*([] if request.xnnpack else [FLAG_NO_XNNPACK]),
            *([] if request.golden_bound is None else [FLAG_GOLDEN_BOUND, repr(request.golden_bound)])]


def kept_check(project: Project, request: InferRequest, model: Path, image: BuiltImage) -> Path | None:
    """Where this model's golden check in this image, runtime and precision is kept (--golden-cache);
    None where none may be used: --no-golden-cache, or fastest, which checks every runtime itself."""
    if not request.golden_cache or request.runtime == RUNTIME_FASTEST:
        return None
    return cache_file(project, model, image.info.id, {"name": request.runtime, "precision": request.precision,
                                                      "bf16_tolerance": request.bf16_tolerance,
                                                      **({"xnnpack": request.xnnpack} if request.runtime == RUNTIME_TFLITE
                                                         else {}),
                                                      **({"golden_bound": request.golden_bound}
                                                         if request.precision in QUANTIZED_PRECISIONS else {})})


def split_images(extra: tuple[str, ...]) -> tuple[tuple[Path, ...], tuple[str, ...]]:
    """The command line's words the host does not know: (the images named there, the arguments for
    the container). A word is an image unless it is an option or the value of one of VALUE_OPTIONS."""
    images, arguments, value_next = [], [], False
    for word in extra:
        if value_next or word.startswith("-"):
            arguments.append(word)
            value_next = not value_next and word in VALUE_OPTIONS
        else:
            images.append(Path(word))
    return tuple(images), tuple(arguments)


def input_mounts(inputs: tuple[Path, ...]) -> tuple[dict, list[str]]:
    """Each input mounted read-only: {mount point: host path}, and the paths the container is told.
    A folder (or a path that is not there, for run_step to name) is mounted as itself; an image file by
    its folder, the container told the file in it (a file mounted alone would lose its name)."""
    mounts, targets = {}, []
    for index, path in enumerate(inputs):
        mount, path = f"{MOUNT_INPUTS}/{index}", path.resolve()
        check_input(path, "image", "image input")  # /dev/zero is refused, not read forever
        if path.is_file():
            mounts[mount] = path.parent
            targets.append(f"{mount}/{path.name}")
        else:
            mounts[mount] = path
            targets.append(mount)
    return mounts, targets


def with_startup(stdout: str, entered: float | None, timing: dict, started: float,
                 threads: ThreadChoice | None = None) -> str:
    """infer's summary with the host's share of the start-up added to the container's phases
    (contract.STARTUP_PHASES): what the user waits for, from typing the command to its output; and the
    threads it ran with and why (threads.choose_threads)."""
    try:
        summary = json.loads(stdout)
    except ValueError:
        return stdout.strip()
    if threads is not None and isinstance(summary, dict):
        summary["threads"] = threads.to_dict()
    inside = summary.get(STARTUP_KEY)
    if not isinstance(inside, dict) or entered is None or "container" not in timing:
        return json.dumps(summary, sort_keys=True) if threads is not None else stdout.strip()
    process = inside.get("container_process_s") or 0.0
    inside.update(host_cli_s=round(entered, 3), host_checks_s=round(timing["checks"], 3),
                  # docker's create, start and exit around the process; then removal and the output's move
                  container_start_s=round(max(0.0, timing["container"] - process), 3),
                  finish_s=round(max(0.0, timing["step"] - timing["container"]), 3),
                  total_s=round(entered + time.perf_counter() - started, 3))
    return json.dumps(summary, sort_keys=True)


def predict(connect: Callable[[], Engine], project: Project, request: InferRequest, output: Path) -> str:
    """Predict into `output`; infer's summary (JSON), its start-up completed. The engine is connected
    only after the request's own checks, so a wrong model path is named at once."""
    started, timing = time.perf_counter(), {}
    settings = request.settings
    if not request.inputs and FLAG_GOLDEN_ONLY not in settings.arguments:
        raise UsageError("no images to predict", fix="name image files or folders (as arguments or with --input), "
                                                     "or pass --golden-only to check the model only")
    mounts, targets = input_mounts(request.inputs)
    fmt = [FLAG_FORMAT, "csv"] if output.suffix == ".csv" else [FLAG_FORMAT, "jsonl"]
    source = model_directory(request.model)
    runtime_args = runtime_arguments(request)
    if request.runtime != RUNTIME_TENSORFLOW and settings.device != "cpu":
        raise UsageError(f"--runtime {request.runtime} runs on the CPU here", fix="drop --device cuda")
    signed = signing.verify_if_trusted(source, request.trust)
    engine = connect()
    image, role = runtime_image(engine, project, request, source)
    if signed is not None:
        signing.refuse_unsigned_additions(signed)  # a conversion made just now is not covered by model.sig
    kept = kept_check(project, request, source, image)
    verified = {MOUNT_GOLDEN_VERIFIED: kept} if kept is not None and kept.is_file() else {}
    threads = choose_threads(manifest_inference(source), Machine.here(), request.threads)
    log.debug("infer threads: %s", threads.to_dict())
    arguments = [FLAG_MODEL, MOUNT_MODEL, *fmt, FLAG_RUNTIME, request.runtime, FLAG_PRECISION, request.precision,
                 FLAG_BF16_TOLERANCE, str(request.bf16_tolerance), FLAG_INTRA_OP_THREADS, str(threads.intra),
                 FLAG_INTER_OP_THREADS, str(threads.inter), *runtime_args,
                 *([FLAG_GOLDEN_VERIFIED, MOUNT_GOLDEN_VERIFIED] if verified else []), *settings.arguments, *targets]
    step = StepConfig(name="infer", role=role, module="infer", output=output.resolve(),
                      inputs={MOUNT_MODEL: source, **verified, **mounts}, arguments=tuple(arguments),
                      device=settings.device, memory=settings.memory, prefix=settings.prefix,
                      timeout_s=settings.timeout_for("infer"), environment=signing.container_environment(signed))
    timing["checks"] = time.perf_counter() - started
    mark = time.perf_counter()
    summary = run_step(engine, project, step, image, timing=timing)
    timing["step"] = time.perf_counter() - mark
    if kept is not None:
        try:
            remember(kept, json.loads(summary))
        except ValueError:
            pass  # not a summary (extra arguments asked for --help): nothing to keep
    return signing.with_signature(with_startup(summary, request.entered, timing, started, threads), signed)


def infer(connect: Callable[[], Engine], project: Project, request: InferRequest) -> str:
    """What infer shows on stdout: with --output, the summary (JSON, for CI); without, the predictions
    for people (label_image's blocks, or the file --format asked for), the summary logged."""
    if request.output is not None:
        return predict(connect, project, request, request.output)
    with writing(project.build_dir):
        project.build_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=project.build_dir, prefix=f"infer-{Owner.current().mark}-"))
    try:
        summary = predict(connect, project, request, scratch / SCRATCH_PREDICTIONS)
        predictions = scratch / SCRATCH_PREDICTIONS
        if not predictions.is_file():
            return summary  # nothing predicted (--golden-only): the summary is the result
        text = predictions.read_text()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log_summary(summary)
    asked = any(word == FLAG_FORMAT or word.startswith(f"{FLAG_FORMAT}=") for word in request.settings.arguments)
    return text.rstrip("\n") if asked else for_people(text)


def log_summary(summary: str) -> None:
    """The summary's gist on stderr, beside the predictions on stdout (all of it with -v)."""
    log.debug("infer summary: %s", summary)
    try:
        data = json.loads(summary)
        total = (data.get(STARTUP_KEY) or {}).get("total_s")
        log.info("infer: %s images in %s s%s; model %s", data.get("images"), data.get("seconds"),
                 f"; {total} s from the command to the predictions" if total is not None else "",
                 data.get("signature", signing.NOT_VERIFIED))
    except (ValueError, TypeError, AttributeError):
        pass  # not a summary: nothing to say
