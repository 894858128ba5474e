"""The drift test on the host, orchestrated: build every environment of the matrix from its lock,
make the model variants (drift/variants.py), run every case group in its environment on a thread
pool (drift/probe.py), judge each outcome and its findings against the expected ones
(drift/judging.py), and assemble the report (drift/assembly.py). The host never imports TensorFlow;
all numbers come back as JSON."""

from __future__ import annotations

import concurrent.futures
import logging
import time
from pathlib import Path

from ..config import RUN_LABEL, Project
from ..engine import Engine
from ..errors import EmulationUnavailable
from ..environments.images import BuiltImage
from ..environments.matrix import CaseSpec, EnvSpec, Matrix
from .assembly import assemble_report, render_heatmap  # noqa: F401 (the CLI imports render_heatmap from here)
from .judging import CaseResult, lock_drift, not_applicable_result, probe_result
from .options import DriftOptions, default_jobs  # noqa: F401 (the CLI imports default_jobs from here)
from .probe import emulator_for, group_cases, probe_group
from .shards import assign, measured_costs
from .tflite import conversion_failed_probe, convert_for_cases
from .variants import build_environments, make_variants, needed, with_model_environment

log = logging.getLogger(__name__)


def run_group(engine: Engine, project: Project, group: list[CaseSpec], env: EnvSpec, image: BuiltImage,
              models: dict[str, Path | str], options: DriftOptions,
              converted: dict | None = None) -> list[CaseResult]:
    """The group's cases in one container (one TensorFlow import); not-applicable ones need none, nor
    do TFLite cases whose artefact could not be converted (conversion-failed, the converter's message)."""
    converted = converted or {}
    results = [not_applicable_result(case, env, image, models[case.variant])
               for case in group if isinstance(models[case.variant], str)]
    failed = [case for case in group if case.settings.per_run_target is not None
              and not isinstance(models[case.variant], str) and isinstance(converted.get((case.env, case.variant)), str)]
    if failed:
        drift = lock_drift(project, env)
        results += [probe_result(case, env, image, conversion_failed_probe(case, converted[(case.env, case.variant)]),
                                 models[case.variant], drift, None, seconds=0.0) for case in failed]
    runnable = [case for case in group if not isinstance(models[case.variant], str) and case not in failed]
    if not runnable:
        return results
    try:
        emulator = emulator_for(runnable[0])  # the group shares its emulate_cpu (CaseSpec.container_key)
    except EmulationUnavailable as refused:
        # Another CPU class is a check this host cannot make (not root, no qemu): said, not failed.
        log.warning("%s: %s (fix: %s)", ", ".join(case.name for case in runnable), refused.message, refused.fix)
        return results + [not_applicable_result(case, env, image, f"{refused.message}; {refused.fix}",
                                                what="this host") for case in runnable]
    started = time.perf_counter()
    drift = lock_drift(project, env)
    probes, error, container_s = probe_group(engine, runnable, env, image, models, options, converted, emulator)
    seconds = time.perf_counter() - started
    # Docker's create/start/wait/remove and the interpreter's start: what sharing a container saves.
    inside = sum(float(probe.get("seconds") or 0.0) for probe in probes.values())
    overhead = max(0.0, container_s - inside) / len(runnable) if container_s is not None and probes else None
    for case in runnable:
        results.append(probe_result(case, env, image, probes.get(case.name), models[case.variant], drift, error,
                                    seconds=seconds / len(runnable), container_s=container_s,
                                    shared_with=len(runnable), overhead_s=overhead))
    return results


def run_cases(engine: Engine, project: Project, matrix: Matrix, options: DriftOptions,
              images: dict[str, BuiltImage], models: dict[str, Path | str],
              converted: dict | None = None) -> list[CaseResult]:
    results: list[CaseResult] = []
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, options.jobs))
    futures = [pool.submit(run_group, engine, project, group, matrix.envs[group[0].env], images[group[0].env], models,
                           options, converted) for group in group_cases(matrix.cases, options.isolate)]
    try:
        for future in concurrent.futures.as_completed(futures):
            for result in future.result():
                log.info("%-28s %-24s expected %-24s got %-24s %s", result.case.name, result.case.env,
                         result.resolved, result.outcome, "ok" if result.ok else "UNEXPECTED")
                results.append(result)
    except BaseException:
        # Ctrl-C (or a crash): stop what is queued and kill what runs now, instead of waiting for it.
        for future in futures:
            future.cancel()
        engine.remove_containers(f"{RUN_LABEL}={options.run_id}")
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    order = {case.name: index for index, case in enumerate(matrix.cases)}
    return sorted(results, key=lambda r: order[r.case.name])


def run_drift_test(engine: Engine, project: Project, matrix: Matrix, options: DriftOptions) -> dict:
    started = time.perf_counter()
    matrix = with_model_environment(matrix, options.model)
    whole = matrix
    if options.shard is not None:
        mine = assign(matrix, options.shard.total, measured_costs(options.costs))[options.shard.index]
        matrix = Matrix(matrix.path, matrix.reference_env, matrix.envs, matrix.variants, tuple(mine))
        log.info("shard %s: %d of %d cases: %s", options.shard, len(mine), len(whole.cases),
                 ", ".join(case.name for case in mine) or "none")
    env_names, variant_names = needed(matrix)
    phases = {}
    mark = time.perf_counter()
    images = build_environments(engine, project, matrix, options, env_names)
    phases["environments_s"] = round(time.perf_counter() - mark, 1)
    mark = time.perf_counter()
    models = make_variants(engine, project, matrix, options, variant_names, images)
    phases["variants_s"] = round(time.perf_counter() - mark, 1)
    mark = time.perf_counter()
    converted = convert_for_cases(engine, project, matrix.cases, options, images, models)
    if converted:
        phases["tflite_conversions_s"] = round(time.perf_counter() - mark, 1)
    mark = time.perf_counter()
    results = run_cases(engine, project, matrix, options, images, models, converted)
    phases["cases_s"] = round(time.perf_counter() - mark, 1)
    report = assemble_report(project, matrix, options, images, models, [result.to_json() for result in results],
                             env_names, {**phases, "total_s": round(time.perf_counter() - started, 1),
                                         "jobs": max(1, options.jobs)})
    report["matrix_cases"] = [case.name for case in whole.cases]
    if options.shard is not None:
        report["shard"] = {"index": options.shard.index, "total": options.shard.total,
                           "cases": [case.name for case in matrix.cases]}
    return report
