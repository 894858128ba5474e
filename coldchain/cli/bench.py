"""The bench command: which measurements to make, handed to coldchain.bench.suite."""

from __future__ import annotations

from pathlib import Path

import click

from .. import options
from ..config import Project
from . import base
from .base import command, main


@main.command("bench")
@options.devices
@options.no_cold
@options.no_images
@options.no_inference
@options.no_tflite
@options.quick
@options.repeats
@options.no_adopt
@options.page_only
@options.no_drift
@options.no_transfer
@options.no_reproducibility
@options.no_signing
@options.bench_run
@options.prefix
@command
def bench_command(project: Project, devices: tuple[str, ...], no_cold: bool, no_images: bool, no_inference: bool,
                  no_tflite: bool, no_adopt: bool, no_drift: bool, no_transfer: bool, no_reproducibility: bool, no_signing: bool, quick: bool,
                  repeats: int, run: Path, prefix: str, page_only: bool):
    """Measure inference speed (TF with oneDNN on/off and a folded graph, against ONNX Runtime; batch
    1/8/32 at 224 px; roofline; threads; start to first prediction; TFLite fp32 and int8 beside TensorFlow
    fp32, with their top-1 agreement), the kit's own costs (cold and
    warm builds, sizes), whether training reproduces across CPU classes (simulated) and what signing
    and verifying the model directory cost; merge them,
    dated, into bench/results.json."""
    from ..bench.suite import BenchRequest, run_bench

    request = BenchRequest(devices=devices, run=run, quick=quick, repeats=repeats, cold=not no_cold,
                           images=not no_images, inference=not no_inference, reproducibility=not no_reproducibility,
                           adopt=not no_adopt, drift=not no_drift, transfer=not no_transfer, signing=not no_signing,
                           tflite=not no_tflite, page_only=page_only,
                           prefix=prefix)
    for text in run_bench(base.connect, project, request):
        click.echo(text)
