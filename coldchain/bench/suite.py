"""The whole of `coldchain bench`: which measurements run, on which run, model and output folders
(relative to the checkout), and their results merged, dated, into bench/results.json (quick mode:
results-quick.json) and the benchmarks page."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..config import Project
from ..engine import Engine
from .results import QUICK_RESULTS, RESULTS, drift_timing, stamp, write_results


@dataclass(frozen=True)
class BenchRequest:
    devices: tuple[str, ...] = ("cpu",)
    run: Path = Path("out/run")  # the training run the benchmark models are frozen from; its data in ../data
    quick: bool = False  # CI mode: tiny input, few repeats, no cold builds
    repeats: int = 3
    cold: bool = True
    images: bool = True
    inference: bool = True
    tflite: bool = True  # TFLite fp32 (XNNPACK on, off) and int8 beside TensorFlow fp32: a section of its own
    reproducibility: bool = True
    adopt: bool = True
    drift: bool = True
    transfer: bool = True
    signing: bool = True
    page_only: bool = False  # measure nothing: write the page from results.json
    prefix: str = "coldchain"


@dataclass(frozen=True)
class BenchPaths:
    run: Path  # the training run
    model: Path  # make freeze's model beside it
    out: Path  # where the bench writes its models and raw results

    @classmethod
    def of(cls, project: Project, request: BenchRequest) -> "BenchPaths":
        run = request.run if request.run.is_absolute() else project.root / request.run
        return cls(run=run, model=run.parent / "model", out=project.root / "out" / "bench")


def measure(engine: Engine, project: Project, request: BenchRequest) -> dict:
    """Each measurement asked for, in order, dated; under "quick" or "full" where both are kept."""
    from .images import ImageBenchOptions, bench_images
    from .inference import InferenceBenchOptions, bench_inference

    paths, quick, prefix = BenchPaths.of(project, request), request.quick, request.prefix
    mode = "quick" if quick else "full"
    results: dict = {}
    if request.images:
        results["images"] = stamp(bench_images(engine, project, ImageBenchOptions(
            devices=tuple(request.devices), cold=request.cold and not quick, repeats=1 if quick else request.repeats,
            prefix=prefix)))
    if request.inference:
        results["inference"] = stamp({mode: bench_inference(engine, project, InferenceBenchOptions(
            run=paths.run, out=paths.out, quick=quick, prefix=prefix))})
    if request.tflite:
        from .tflite import TfliteBenchOptions, bench_tflite

        results["tflite"] = stamp({mode: bench_tflite(engine, project, TfliteBenchOptions(
            run=paths.run, out=paths.out, quick=quick, prefix=prefix))})
    if request.reproducibility:
        from .reproducibility import bench_reproducibility

        results["reproducibility"] = stamp({mode: bench_reproducibility(engine, project,
                                                                        reproducibility_options(paths, quick, prefix))})
    if request.adopt:
        from .adopt import AdoptBenchOptions, bench_adopt

        results["adopt"] = stamp({mode: bench_adopt(engine, project, AdoptBenchOptions(
            model=paths.model, out=paths.out / "adopt", quick=quick, prefix=prefix))})
    if request.drift:
        from .drift import DriftBenchOptions, bench_drift

        results["drift"] = stamp({mode: bench_drift(project, DriftBenchOptions(
            model=paths.model, out=paths.out / "drift", quick=quick, prefix=prefix))})
    if request.transfer:
        from .transfer import TransferBenchOptions, bench_transfer

        results["transfer"] = stamp({mode: bench_transfer(engine, project, TransferBenchOptions(
            model=paths.model, out=paths.out / "transfer", rebuild=not quick, prefix=prefix))})
    if request.signing:
        from .signing import SigningBenchOptions, bench_signing

        results["signing"] = stamp({mode: bench_signing(SigningBenchOptions(
            model=paths.model, out=paths.out / "signing", repeats=1 if quick else request.repeats))})
    results["drift_test"] = drift_timing(project)
    return results


def reproducibility_options(paths: BenchPaths, quick: bool, prefix: str):
    """The training runs the reproducibility measurement makes (and finds again by their key) for this run's data."""
    from .reproducibility import QUICK_TRAIN_ARGS, ReproducibilityOptions

    return ReproducibilityOptions(data=paths.run.parent / "data",
                                  out=paths.out / ("reproducibility-quick" if quick else "reproducibility"),
                                  train_args=QUICK_TRAIN_ARGS if quick else (), prefix=prefix)


def run_bench(connect: Callable[[], Engine], project: Project, request: BenchRequest) -> list[str]:
    """Measure and write the results (and, unless quick, the page); what each write reports, to show."""
    from .page import write_page

    if request.page_only:
        return [write_page(project, RESULTS)]
    shown = [write_results(project, measure(connect(), project, request), QUICK_RESULTS if request.quick else RESULTS)]
    if not request.quick:
        shown.append(write_page(project, RESULTS))
    return shown
