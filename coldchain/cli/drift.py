"""The drift-test commands: drift-test (the whole matrix or one shard), drift-plan, and drift-merge."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click

from .. import options
from ..config import Project
from ..contract import Exit
from . import base
from .base import command, emit, main

log = logging.getLogger("coldchain")


@main.command("drift-test")
@options.matrix
@options.drift_model
@options.drift_run
@options.drift_out
@options.cases
@options.shard
@options.costs
@options.isolate
@options.jobs
@options.allow_op
@options.memory
@options.prefix
@options.json_output
@options.trust
@command
def drift_test_command(project: Project, matrix_path: Path, model: Path, run: Path | None, out: Path,
                       cases: tuple[str, ...], shard: str | None, costs: Path | None, isolate: bool, jobs: int,
                       allowed_ops: tuple[str, ...], memory: str, prefix: str, as_json: bool, trust: tuple[Path, ...]):
    """Run the model in every environment of the drift matrix; fail unless every outcome (and every
    expected finding) is the expected one. Exit 0: all as expected; 1: some case unexpected."""
    from ..drift.commands import DriftTestRequest, drift_test

    result = drift_test(base.connect, project, DriftTestRequest(
        model=model, out=out, run=run, matrix_path=matrix_path, cases=cases, shard=shard, environ=dict(os.environ),
        costs=costs, isolate=isolate, jobs=jobs, memory=memory, prefix=prefix, allowed_ops=allowed_ops, trust=trust))
    _finish_drift(result, as_json, f"shard {result.shard}: " if result.shard else "")


def _finish_drift(result, as_json: bool, what: str) -> None:
    for kind, path in result.paths.items():
        log.info("%s report: %s", kind, path)
    report, counts = result.report, result.report["counts"]
    emit(report, as_json, f"drift test: {what}{counts['as_expected']}/{counts['cases'] - counts['not_applicable']} "
                          "cases as expected"
         + (f", {counts['not_applicable']} not applicable" if counts["not_applicable"] else "")
         + ("" if report["ok"] else f"; {counts['unexpected']} UNEXPECTED (see {result.paths['markdown']})"))
    if not report["ok"]:
        sys.exit(Exit.UNEXPECTED)


@main.command("drift-plan")
@options.matrix
@options.drift_model
@options.cases
@options.shards
@options.costs
@command
def drift_plan_command(project: Project, matrix_path: Path, model: Path, cases: tuple[str, ...], shards: int,
                       costs: Path | None):
    """Print how drift-test --shard I/N splits the matrix, as one line of JSON a CI job matrix reads
    (GitHub: matrix: ${{ fromJSON(needs.plan.outputs.shards) }}): each shard's cases, the
    environments and images it needs, and its estimated seconds."""
    from ..drift.commands import drift_plan

    click.echo(json.dumps(drift_plan(project, matrix_path, model, cases, shards, costs), sort_keys=True))


@main.command("drift-merge")
@options.partials
@options.merge_out
@options.no_heatmap
@options.prefix
@options.json_output
@command
def drift_merge_command(project: Project, partials: tuple[Path, ...], out: Path, no_heatmap: bool, prefix: str,
                        as_json: bool):
    """Merge the shards' partial reports (files, or the directories holding them) into the report an
    unsharded run writes: JSON, Markdown, JUnit XML and the heatmap. Refuses, naming the file, shards
    of another model or matrix, a missing or repeated shard or case, a truncated report. Exit 1 when
    any case is unexpected."""
    from ..drift.commands import drift_merge

    result = drift_merge(base.connect, project, partials, out, heatmap=not no_heatmap, prefix=prefix)
    _finish_drift(result, as_json, f"{result.report['timing']['jobs']} shards merged: ")
