"""The drift test on the host, as its commands ask for it: the matrix (its selected cases, the model's
own environment), the shard (--shard or the CI job matrix's variables), the run and its reports, the
plan a CI job matrix reads, and the shards' partial reports merged."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from ..config import RUN_LABEL, Project
from ..engine import Engine
from ..steps.model_argument import matrix_model, resolve_model
from ..steps.signing import container_environment, signature_status, verify_if_trusted


@dataclass(frozen=True)
class DriftTestRequest:
    model: Path
    out: Path
    run: Path | None = None  # the training run re-frozen variants are made from (default: out/run for out/model)
    matrix_path: Path = Path("drift/matrix.toml")
    cases: tuple[str, ...] = ()
    shard: str | None = None  # "I/N"; without it the CI's job-matrix variables in `environ` choose
    environ: Mapping[str, str] = field(default_factory=dict)
    costs: Path | None = None
    isolate: bool = False
    jobs: int = 0  # 0: default_jobs()
    memory: str = "8g"
    prefix: str = "coldchain"
    allowed_ops: tuple[str, ...] = ()  # --allow-op, passed to every case's probe
    trust: tuple[Path, ...] = ()  # public keys or certificates the model's model.sig must verify against


@dataclass(frozen=True)
class DriftResult:
    report: dict
    paths: dict  # kind -> the report file written
    shard: object | None = None  # drift.shards.Shard, when one shard ran


def load_matrix_at(project: Project, matrix_path: Path, cases: tuple[str, ...] = ()):
    """The drift matrix (relative to the checkout unless absolute), only the named cases if any."""
    from .matrix import load_matrix

    return load_matrix(matrix_path if matrix_path.is_absolute() else project.root / matrix_path).select(cases)


def choose_shard(shard: str | None, environ: Mapping[str, str]):
    from .shards import parse_shard, shard_from_environment

    return parse_shard(shard) if shard else shard_from_environment(environ)


def new_run_id(prefix: str) -> str:
    """Labels this run's containers, so they can be removed whatever happens."""
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def drift_test(connect: Callable[[], Engine], project: Project, request: DriftTestRequest) -> DriftResult:
    """Run the cases (one shard's, or all and the heatmap), write the reports; the engine is connected
    once the matrix, shard and model are known to be right."""
    from .report import write_reports
    from .runner import DriftOptions, default_jobs, render_heatmap, run_drift_test

    matrix = load_matrix_at(project, request.matrix_path, request.cases)
    chosen = choose_shard(request.shard, request.environ)
    found = resolve_model(request.model)
    model = found.spelled  # a model file stands for its directory; the report keeps the spelling
    signed = verify_if_trusted(found.directory, request.trust)  # before any container runs
    run = request.run
    if run is None and model.resolve() == (project.root / "out" / "model").resolve():
        run = project.root / "out" / "run"
    engine = connect()
    options = DriftOptions(model=model, run=run, out=request.out, prefix=request.prefix,
                           run_id=new_run_id(request.prefix), jobs=request.jobs or default_jobs(),
                           memory=request.memory, shard=chosen, costs=request.costs, isolate=request.isolate,
                           allowed_ops=request.allowed_ops,
                           signed_environment=tuple(container_environment(signed).items()))
    try:
        report = run_drift_test(engine, project, matrix, options)
    finally:
        engine.remove_containers(f"{RUN_LABEL}={options.run_id}")  # Ctrl-C or a crash leaves nothing running
    if request.allowed_ops:
        report["allowed_ops"] = list(request.allowed_ops)  # the graph scan's override, recorded
    report["signature"] = signature_status(signed)
    paths = write_reports(report, request.out, chosen.suffix if chosen else "")
    if chosen is None:
        paths["heatmap"] = render_heatmap(engine, project, paths["json"], options)
    return DriftResult(report, paths, chosen)


def drift_plan(project: Project, matrix_path: Path, model: Path, cases: tuple[str, ...], shards: int,
               costs: Path | None) -> dict:
    """How drift-test --shard I/N splits the matrix (the model's own environment included)."""
    from .runner import with_model_environment
    from .shards import measured_costs, plan

    matrix = with_model_environment(load_matrix_at(project, matrix_path, cases), matrix_model(model))
    return plan(matrix, shards, measured_costs(costs))


def drift_merge(connect: Callable[[], Engine], project: Project, partials: tuple[Path, ...], out: Path, *,
                heatmap: bool = True, prefix: str = "coldchain") -> DriftResult:
    """The shards' partial reports as the one an unsharded run writes (the heatmap drawn unless not wanted)."""
    from .merge import merge
    from .report import write_reports
    from .runner import DriftOptions, render_heatmap

    report = merge(list(partials))
    paths = write_reports(report, out)
    if heatmap:
        options = DriftOptions(model=Path(report.get("model") or "."), run=None, out=out, prefix=prefix,
                               run_id=new_run_id(prefix))
        paths["heatmap"] = render_heatmap(connect(), project, paths["json"], options)
    return DriftResult(report, paths)
