"""The commands that take a model from outside the chain: reexport, adopt, and doctor."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from .. import options
from ..config import Project
from ..contract import (FLAG_IMAGE_SIZE, FLAG_INPUT, FLAG_LABELS_OFFSET, FLAG_LOGITS, FLAG_OUTPUT, FLAG_PREPROCESSING,
                        FLAG_PREPROCESSING_FIELD, allow_op_arguments)
from . import base
from .base import command, main, step_command, step_settings

log = logging.getLogger("coldchain")


@step_command("reexport")
@options.model_argument
@options.out_dir
@options.clear_devices
@options.strip_default_attrs
@options.with_env
@options.matrix
@options.sign_key
def reexport_command(project: Project, model: Path, out: Path, clear_devices: bool, strip_default_attrs: bool,
                     with_env: str | None, matrix_path: Path, sign_key: Path | None, device: str, memory: str,
                     prefix: str, timeout_s, extra):
    """Write MODEL (a model directory or frozen graph file) out again with the standard fixes: device
    fields cleared, default-valued attributes stripped; the manifest's sha256 follows, the golden stays."""
    from ..steps.reexport import ReexportRequest, reexport

    reexport(base.connect, project, ReexportRequest(
        model=model, out=out, clear_devices=clear_devices, strip_default_attrs=strip_default_attrs, with_env=with_env,
        matrix_path=matrix_path, settings=step_settings(device, memory, prefix, timeout_s, extra), sign_key=sign_key))
    log.info("re-exported model written to %s", out)


@main.command("adopt")
@options.model_argument
@options.adopt_out
@options.labels_file
@options.labels_offset
@options.own_images
@options.preprocessing
@options.preprocessing_fields
@options.graph_input
@options.graph_output
@options.graph_logits
@options.image_size
@options.op_library
@options.requirements
@options.python_version
@options.environment_name
@options.reference_image
@options.reference_env
@options.allow_op
@options.matrix
@options.sign_key
@options.memory
@options.prefix
@options.timeout
@command
def adopt_command(project: Project, model: Path, out: Path, labels: Path | None, labels_offset: int | None,
                  images: Path | None, preprocessing: str, preprocessing_fields: tuple[str, ...], graph_input: str | None,
                  graph_output: str | None, graph_logits: str | None, image_size: int | None,
                  op_libraries: tuple[Path, ...], requirements: Path | None, python: str | None, environment_name: str,
                  reference_image: str | None, reference_env: str | None, allowed_ops: tuple[str, ...],
                  matrix_path: Path, sign_key: Path | None, memory: str, prefix: str, timeout_s: float | None):
    """Adopt MODEL, a frozen graph made outside coldchain (slim's export_inference_graph.py, then
    freeze_graph), into a model directory that infer, doctor and drift-test take like the kit's own.
    The model's bytes are not changed; its manifest and golden outputs are computed in the reference
    environment: your own (--requirements), an image, a matrix environment, or the kit's training image."""
    from ..steps.adopt import ADOPT_TIMEOUT_S, AdoptRequest, adopt

    arguments = [FLAG_PREPROCESSING, preprocessing, *allow_op_arguments(allowed_ops)]
    for field_value in preprocessing_fields:
        arguments += [FLAG_PREPROCESSING_FIELD, field_value]
    for flag, value in ((FLAG_INPUT, graph_input), (FLAG_OUTPUT, graph_output), (FLAG_LOGITS, graph_logits),
                        (FLAG_IMAGE_SIZE, image_size), (FLAG_LABELS_OFFSET, labels_offset)):
        if value is not None:
            arguments += [flag, str(value)]
    request = AdoptRequest(model=model, out=out, labels=labels, images=images, op_libraries=op_libraries,
                           requirements=requirements, python=python, environment_name=environment_name,
                           reference_image=reference_image, reference_env=reference_env, matrix_path=matrix_path,
                           arguments=tuple(arguments), prefix=prefix, memory=memory,
                           timeout_s=timeout_s or ADOPT_TIMEOUT_S, sign_key=sign_key)
    adopt(base.connect(), project, request)
    log.info("adopted model written to %s: coldchain infer --model %s ..., coldchain doctor %s, make drift-test "
             "MODEL=%s", out, out, out, out)


@main.command("doctor")
@options.model_argument
@options.manifest
@options.env_name
@options.image_tag
@options.load_op_libraries
@options.allow_soft_placement
@options.no_run
@options.allow_op
@options.matrix
@options.prefix
@options.json_output
@options.trust
@command
def doctor_command(project: Project, model: Path, manifest: Path | None, env_name: str | None, image_tag: str | None,
                   load_op_libraries: bool, allow_soft_placement: bool, run: bool, allowed_ops: tuple[str, ...],
                   matrix_path: Path, prefix: str, as_json: bool, trust: tuple[Path, ...]):
    """Whether a TensorFlow runtime can load and run MODEL (a frozen graph or its directory), and if not,
    each cause with its fix. Stages: manifest, static reading, the runtime's own import, one run.
    Runs in the inference image (or --env/--image). Exit 0: loadable; 3: blocking problems."""
    from ..steps.diagnose import DoctorRequest, run_doctor

    code, text = run_doctor(base.connect(), project, DoctorRequest(
        model=model, manifest=manifest, env_name=env_name, image_tag=image_tag, matrix_path=matrix_path, prefix=prefix,
        load_op_libraries=load_op_libraries, allow_soft_placement=allow_soft_placement, run=run, as_json=as_json,
        allowed_ops=allowed_ops, trust=trust))
    click.echo(text)
    sys.exit(code)
