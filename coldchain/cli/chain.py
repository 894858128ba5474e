"""The chain's step commands, each in its container: data, train, freeze, infer, and convert."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from .. import options
from ..config import Project
from ..contract import allow_op_arguments, seconds_since_process_start
from ..errors import UsageError
from . import base
from .base import step_command, step_settings

log = logging.getLogger("coldchain")


@step_command("data")
@options.out_dir
def data_command(project: Project, out: Path, device: str, memory: str, prefix: str, timeout_s, extra):
    """Generate the default dataset (deterministic from --seed, with a held-out split).
    Extra arguments go to the container's make_data (e.g. --seed 1 --classes 5)."""
    from ..steps.chain import DataRequest, make_data

    make_data(base.connect(), project, DataRequest(out, step_settings(device, memory, prefix, timeout_s, extra)))
    log.info("dataset written to %s", out)


@step_command("train")
@options.data_dir
@options.out_dir
@options.checkpoint
def train_command(project: Project, data: Path, out: Path, checkpoint_path: Path | None, device: str, memory: str,
                  prefix: str, timeout_s, extra):
    """Train (or, with --checkpoint-path, fine-tune) ResNet v1 50 in the training container.
    Extra arguments go to the container's train step (e.g. --max-steps 300 --image-size 64
    --numerics portable --preprocessing vgg); `python -m incontainer.steps.train --help` lists them."""
    from ..steps.chain import TrainRequest, train

    metrics = train(base.connect(), project, TrainRequest(data, out, checkpoint_path,
                                                          step_settings(device, memory, prefix, timeout_s, extra)))
    if metrics is not None:
        click.echo(metrics)


@step_command("freeze")
@options.run_dir
@options.out_dir
@options.sign_key
def freeze_command(project: Project, run: Path, out: Path, sign_key: Path | None, device: str, memory: str,
                   prefix: str, timeout_s, extra):
    """Freeze a training run into model.pb + manifest.json + golden.npz, in the training container; the
    image's SBOM goes to environment/sbom.cdx.json, and with --sign-key model.sig covers every file."""
    from ..steps.chain import FreezeRequest, freeze

    freeze(base.connect(), project, FreezeRequest(run, out, step_settings(device, memory, prefix, timeout_s, extra),
                                                  sign_key=sign_key))
    log.info("frozen model written to %s", out)


@step_command("infer", passthrough=options.images_and_passthrough)
@options.model_dir
@options.output_file
@options.inputs
@options.runtime
@options.precision
@options.bf16_tolerance
@options.no_xnnpack
@options.golden_bound
@options.golden_cache
@options.allow_op
@options.trust
@options.infer_threads
@options.env_name
@options.matrix
def infer_command(project: Project, model: Path, output: Path | None, inputs: tuple[Path, ...], runtime: str, precision: str,
                  bf16_tolerance: float, no_xnnpack: bool, golden_bound: float | None, golden_cache: bool,
                  allowed_ops: tuple[str, ...], trust: tuple[Path, ...], threads, env_name: str | None, matrix_path: Path,
                  device: str, memory: str, prefix: str, timeout_s, extra):
    """Predict in the inference container (no network, read-only model), after checking the model's
    sha256, its manifest, the runtime (doctor) and the golden probe. With --runtime onnxruntime or
    openvino, in the runtimes image, on the model's conversion (made or remade first when missing or
    stale); the summary records the precision the runtime reports it computed in. With --runtime
    tflite, LiteRT runs converted/tflite-<precision>/ (XNNPACK on unless --no-xnnpack); fp16, dynamic
    and int8 are judged by top-1 agreement and the model's probability-error bound. With --runtime
    fastest, every runtime able to compute at --precision is golden-checked and timed, and the fastest
    that passed predicts (runtime_choice in the summary says which and why). A golden check this model
    passed in this image is kept (build/golden-checks) and used instead of the probe while the model,
    image and effective numerics stay the same; the summary's startup breaks the wait down.

    Images are files or folders, given with --input or as arguments. With --output the predictions go
    to that file and the summary (JSON) to stdout; without it each image's top 5 is printed, the path
    then `label (probability)` lines, as TensorFlow's label_image prints them."""
    entered = seconds_since_process_start()
    from ..steps.infer import InferRequest, infer, split_images

    images, arguments = split_images(extra)
    request = InferRequest(model=model, output=output, inputs=inputs + images, runtime=runtime, precision=precision,
                           bf16_tolerance=bf16_tolerance, golden_cache=golden_cache, entered=entered, trust=trust,
                           threads=threads, xnnpack=not no_xnnpack, golden_bound=golden_bound, env_name=env_name,
                           matrix_path=matrix_path, settings=step_settings(device, memory, prefix, timeout_s,
                                                  arguments + allow_op_arguments(allowed_ops)))
    click.echo(infer(base.connect, project, request))


@step_command("convert")
@options.model_argument
@options.converted_runtime
@options.calibration_images
def convert_command(project: Project, model: Path, runtime: tuple[str, ...], calibration: Path | None, device: str, memory: str,
                    prefix: str, timeout_s, extra):
    """Convert MODEL (a model directory, or the model.pb in it) for ONNX Runtime (tf2onnx), OpenVINO (its
    TensorFlow frontend, saved as fp32 IR) or TensorFlow Lite (TensorFlow's converter: tflite-fp32, -fp16,
    -dynamic, -int8), or int8 for OpenVINO (NNCF: openvino-int8) and ONNX Runtime (static QDQ:
    onnxruntime-int8), into MODEL/converted/<target>/, in the runtimes image, with each file's sha256,
    the source model's sha256 and the converter versions in conversion.json (quantized: the probability
    error and top-1 agreement measured on the golden images, and the quantized golden bound; int8 also
    the top-1 agreement on the held-out images, data/val beside the model folder). infer --runtime does
    this by itself when the conversion is missing or stale."""
    from ..steps.convert import convert, held_out_images, runtimes_image

    if extra:
        raise UsageError(f"unexpected arguments: {' '.join(extra)}", fix="see coldchain convert --help")
    engine = base.connect()
    click.echo(convert(engine, project, model, runtime, runtimes_image(engine, project, prefix), memory=memory,
                       prefix=prefix, timeout_s=timeout_s, calibration=calibration,
                       held_out=held_out_images(model, runtime)).strip())
