"""The drift probe on the host's side: the arguments each case passes it, which cases share one
probe container, where ONNX conversions are kept between runs, and the one container run that
probes a group of cases and reads back each case's report."""

from __future__ import annotations

import json
from pathlib import Path

from ..contract import ENV_SIGNED_MODEL_DIR, SIGNED_DIRECTORY_CHANGED
from ..contract import (FLAG_ALLOW_SOFT_PLACEMENT, FLAG_BF16_TOLERANCE, FLAG_CONVERSION_CACHE, FLAG_CONVERTED,
                        FLAG_INTER_OP_THREADS, FLAG_INTRA_OP_THREADS, FLAG_LOAD_OP_LIBRARIES, FLAG_MODEL,
                        FLAG_NO_XNNPACK, FLAG_PLAN, FLAG_PRECISION, FLAG_PREPROCESSING, FLAG_RUNTIME,
                        MOUNT_CONVERSIONS, MOUNT_CONVERTED, MOUNT_MODELS, PRECISION_BF16, PRECISION_FP32,
                        RUNTIME_ONNXRUNTIME, RUNTIME_TENSORFLOW, ProbeReport, allow_op_arguments)
from ..engine import Engine, Mount
from ..environments.images import BuiltImage
from ..environments.matrix import DEFAULT_VARIANT, CaseSpec, EnvSpec
from ..errors import ColdchainError, SignatureError
from ..fsutil import writing
from ..steps.convert import memory_for
from ..steps.runner import Image, ModuleRun, hand_to_container_user, run_module
from .options import DriftOptions

CASE_TIMEOUT_S = 900.0


def model_mount(variant: str) -> str:
    return f"{MOUNT_MODELS}/{variant}"


def converted_mount(variant: str) -> str:
    """Where a TFLite case's artefacts (converted once per drift run, drift/tflite.py) are mounted."""
    return f"{MOUNT_CONVERTED}/{variant}"


def probe_arguments(case: CaseSpec) -> tuple[str, ...]:
    settings = case.settings
    arguments = [FLAG_MODEL, model_mount(case.variant)]
    if settings.load_op_libraries:
        arguments.append(FLAG_LOAD_OP_LIBRARIES)
    if settings.allow_soft_placement:
        arguments.append(FLAG_ALLOW_SOFT_PLACEMENT)
    if settings.intra_op_threads:
        arguments += [FLAG_INTRA_OP_THREADS, str(settings.intra_op_threads)]
    if settings.inter_op_threads:
        arguments += [FLAG_INTER_OP_THREADS, str(settings.inter_op_threads)]
    for item in settings.preprocessing:
        arguments += [FLAG_PREPROCESSING, item]
    if settings.runtime != RUNTIME_TENSORFLOW:
        arguments += [FLAG_RUNTIME, settings.runtime]
    if settings.precision != PRECISION_FP32:
        arguments += [FLAG_PRECISION, settings.precision]
    if settings.precision == PRECISION_BF16:
        arguments += [FLAG_BF16_TOLERANCE, str(settings.bf16_tolerance)]
    if settings.per_run_target is not None:
        arguments += [FLAG_CONVERTED, converted_mount(case.variant)] + ([] if settings.xnnpack else [FLAG_NO_XNNPACK])
    return tuple(arguments)


def group_cases(cases, isolate: bool = False) -> list[list[CaseSpec]]:
    """Cases that share one container (CaseSpec.container_key); each alone with isolate."""
    groups: dict[tuple, list[CaseSpec]] = {}
    for case in cases:
        groups.setdefault((case.name,) if isolate else case.container_key, []).append(case)
    return list(groups.values())


def conversions(options: DriftOptions) -> Path:
    """Where the probes keep their ONNX conversions between runs (one per graph, converter and image):
    beside the report, writable by the containers' user."""
    directory = (options.out / "conversions").resolve()
    with writing(directory):
        directory.mkdir(parents=True, exist_ok=True)
        hand_to_container_user(directory)
    return directory


def probe_group(engine: Engine, cases: list[CaseSpec], env: EnvSpec, image: BuiltImage, models: dict[str, Path],
                options: DriftOptions, converted: dict | None = None, emulator: tuple[Path, str] | None = None
                ) -> tuple[dict[str, dict], str | None, float | None]:
    """Probe the cases in one container (one TensorFlow import): (each case's report by name, why
    there are none, the container's seconds). `converted`: {(env, variant): folder} of TFLite artefacts;
    `emulator`: the cases' emulated CPU (emulator_for)."""
    first = cases[0]
    inputs = {model_mount(case.variant): models[case.variant] for case in cases}
    inputs.update({converted_mount(case.variant): (converted or {})[(case.env, case.variant)]
                   for case in cases if case.settings.per_run_target is not None})
    kept = conversions(options) if first.settings.runtime == RUNTIME_ONNXRUNTIME else None
    plan = [{"name": case.name, "args": [*probe_arguments(case), *allow_op_arguments(options.allowed_ops),
                                         *((FLAG_CONVERSION_CACHE, MOUNT_CONVERSIONS) if kept else ())]}
            for case in cases]
    run = ModuleRun(image=Image.of(image), module="probe", arguments=(FLAG_PLAN, json.dumps(plan)),
                    output=Mount(kept, MOUNT_CONVERSIONS, False) if kept else None,
                    what=f"drift case{'s' if len(cases) > 1 else ''} {', '.join(case.name for case in cases)}",
                    inputs=inputs,
                    environment={**dict(first.settings.environment), **signed_environment(cases, options)},
                    memory=memory_for(first.settings.runtime, options.memory),
                    timeout_s=CASE_TIMEOUT_S * len(cases), gpus=env.device == "cuda" and engine.gpu_runtime(),
                    run_id=options.run_id, name=f"{options.run_id}-drift-{first.name}"[:120],
                    emulator=emulator)
    probes, error, container_s = {}, None, None
    try:
        result = run_module(engine, run)
        container_s = result.seconds
        probes = {name: report.to_dict()
                  for name, report in ProbeReport.many_from_json(result.stdout.strip().splitlines()[-1]).items()}
    except (ValueError, IndexError):
        error = "the probe printed no whole report"
    except ColdchainError as failure:
        if SIGNED_DIRECTORY_CHANGED in failure.message:  # not a case's outcome: the whole run is refused
            raise SignatureError(failure.message, fix="copy the model directory again from where it was signed, "
                                                      "then rerun") from None
        error = failure.message
    return probes, error, container_s


def emulator_for(case: CaseSpec) -> tuple[Path, str] | None:
    """A case run as another x86-64 CPU model (emulate_cpu): the host's qemu for it, set up where missing;
    EmulationUnavailable where this host cannot."""
    if case.settings.emulate_cpu is None:
        return None
    from ..environments.emulation import x86_emulator

    return x86_emulator(case.settings.emulate_cpu), case.settings.emulate_cpu


def signed_environment(cases: list[CaseSpec], options: DriftOptions) -> dict[str, str]:
    """With --trust, for a container that reads the signed directory (the default variant): what the host
    verified, for that mount only. The other variants beside it were made by this run from the training
    run or from the model, so its signature does not cover them."""
    if not options.signed_environment or all(case.variant != DEFAULT_VARIANT for case in cases):
        return {}
    return {**dict(options.signed_environment), ENV_SIGNED_MODEL_DIR: model_mount(DEFAULT_VARIANT)}
