"""Drift-test cases inside one environment: for each, diagnose, import, check preprocessing, run the
golden probe layer by layer, check batch invariance, time it, and record the numerics it computed
with. One case per call, or several (--plan) that share this process's TensorFlow import: the host
groups the cases whose settings leave no state behind in a process. Prints {case: ProbeReport} as
one JSON object; the outcome is data, not an exit code, so the host compares it with what the matrix
expected. Exit 0 unless the probe itself breaks.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Optional, Sequence

from ..common import InsideError, emit_json, log, quiet_tensorflow_logs, run_main
from ..contract import (FLAG_ALLOW_SOFT_PLACEMENT, FLAG_LOAD_OP_LIBRARIES, MANIFEST_FILE, OUTCOME_BIT_EXACT,
                        MODULES, OUTCOME_PASS, STAGE_RUN, Code, ProbeReport)
from ..data.preprocess import PreprocessSpec, with_fields
from ..diagnosis.doctor import DoctorOptions, diagnose
from ..graph import manifest as manifests
from ..graph.graphdef import classify_run_error, first_line
from .check import (BATCH_DEPENDENT_CAUSE, batch_invariance, batch_limit, evaluate, golden_tensors, in_batches, missing_tensors,
                    preprocessing_result, session_runner)

STARTED = time.perf_counter()


def seconds_since_process_start() -> Optional[float]:
    """How long this process has existed (interpreter start, imports), from /proc."""
    try:
        with open("/proc/self/stat") as handle:
            start_ticks = float(handle.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as handle:
            uptime = float(handle.read().split()[0])
        return round(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 3)
    except (OSError, ValueError, IndexError):
        return None


def parse_args(argv: Optional[Sequence[str]]):
    parser = argparse.ArgumentParser(prog=f"python -m {MODULES['probe']}", description=__doc__)
    parser.add_argument("--plan", help="JSON list of {name, args}: several cases in this one process")
    parser.add_argument("--name", default="case", help="the case's name in the output")
    parser.add_argument("--model", help="model directory")
    parser.add_argument(FLAG_LOAD_OP_LIBRARIES, dest="load_op_libraries", action="store_true",
                        help="load the model's shipped op libraries")
    parser.add_argument(FLAG_ALLOW_SOFT_PLACEMENT, dest="allow_soft_placement", action="store_true")
    parser.add_argument("--preprocessing", action="append", default=[], metavar="FIELD=VALUE",
                        help="run this runtime's preprocessing with a field changed (simulates serving code that "
                             "preprocesses differently)")
    parser.add_argument("--intra-op-threads", type=int, default=0)
    parser.add_argument("--inter-op-threads", type=int, default=0)
    parser.add_argument("--latency-runs", type=int, default=3)
    return parser.parse_args(argv)


def probe(args, first: bool = True) -> ProbeReport:
    import tensorflow as tf

    from ..runtime import effective_numerics

    # Interpreter start and TensorFlow's import are paid once per process: by its first case.
    timing = {"process_start_to_main_s": seconds_since_process_start() if first else 0.0}
    mark = time.perf_counter()
    report = ProbeReport(numerics=effective_numerics(args.intra_op_threads, args.inter_op_threads), timing=timing)
    timing["import_tensorflow_s"] = round(time.perf_counter() - mark, 3)
    mark = time.perf_counter()
    diagnosis = diagnose(DoctorOptions(model=args.model, load_shipped_op_libraries=args.load_op_libraries,
                                       allow_soft_placement=args.allow_soft_placement, run=False))
    timing["diagnosis_s"] = round(time.perf_counter() - mark, 3)
    report.diagnosis = diagnosis.to_json()
    if diagnosis.blocking_before_running:
        report.outcome = diagnosis.outcome
        return report
    manifest = diagnosis.manifest
    if manifest is None:
        raise InsideError(f"{args.model} has no usable manifest; adopt the model first (coldchain adopt)")
    report.loaded = True
    mark = time.perf_counter()
    arrays = manifests.load_golden_arrays(args.model, manifest)
    spec = PreprocessSpec.from_json(manifest["preprocessing"], MANIFEST_FILE)
    report.preprocessing = preprocessing_result(manifest, arrays, with_fields(spec, args.preprocessing,
                                                                               "--preprocessing"))
    timing["preprocessing_s"] = round(time.perf_counter() - mark, 3)
    tensors = golden_tensors(manifest)
    missing = missing_tensors(diagnosis.graph, list(tensors.values()))
    if missing:
        report.outcome, report.load_error = Code.MISSING_NODE, f"golden tensors {missing} are not in the graph"
        return report
    tf.config.experimental.enable_tensor_float_32_execution(False)
    config = tf.compat.v1.ConfigProto(allow_soft_placement=args.allow_soft_placement,
                                      intra_op_parallelism_threads=args.intra_op_threads,
                                      inter_op_parallelism_threads=args.inter_op_threads)
    input_tensor = manifests.tensor_of(manifest["inputs"][0])
    with tf.compat.v1.Session(graph=diagnosis.graph, config=config) as session:
        run = session_runner(session, tensors, input_tensor)
        try:
            mark = time.perf_counter()
            report.golden = evaluate(run, manifest, arrays)
            timing["golden_s"] = round(time.perf_counter() - mark, 3)
            invariance = batch_invariance(run, manifest, arrays)
            report.golden["batch_invariance"] = invariance
        except tf.errors.OpError as error:
            report.load_error = first_line(error)
            diagnosis.confirm(classify_run_error(report.load_error), report.load_error, STAGE_RUN)
            report.diagnosis, report.outcome = diagnosis.to_json(), diagnosis.outcome
            return report
        # One image, as a serving request sends it: the latency a case reports, not a throughput benchmark.
        batch = arrays[manifest["golden"]["input_key"]][:1]
        output = manifests.tensor_of(manifests.output_entry(manifest, "probabilities")
                                     or manifests.output_entry(manifest, "logits"))
        timings = []
        mark = time.perf_counter()
        for _ in range(max(1, args.latency_runs)):
            begin = time.perf_counter()
            in_batches(lambda feed: {"out": session.run(output, {input_tensor: feed})}, batch,
                       batch_limit(manifest))
            timings.append(time.perf_counter() - begin)
        timing["latency_s"] = round(time.perf_counter() - mark, 3)
        median = statistics.median(timings)
        report.latency = {"batch": int(batch.shape[0]), "runs": len(timings), "median_ms": round(median * 1e3, 3),
                          "images_per_second": round(batch.shape[0] / median, 2),
                          "input_shape": [int(dim) for dim in batch.shape]}
    if invariance is not None and not invariance["ok"]:
        diagnosis.confirm(Code.BATCH_NORM_TRAINING, BATCH_DEPENDENT_CAUSE.format(
            key=invariance["key"], diff=invariance["max_abs_diff"], ratio=invariance["worst_fraction_of_tolerance"]),
            STAGE_RUN)
    else:
        diagnosis.ran("ran the golden probe" + (" (outputs independent of the batch)" if invariance else ""))
    report.diagnosis = diagnosis.to_json()
    if diagnosis.blocking:
        report.outcome = diagnosis.outcome
    elif report.preprocessing is not None and not report.preprocessing["ok"]:
        report.outcome = Code.PREPROCESSING_MISMATCH
    elif not report.golden["ok"]:
        report.outcome = Code.GOLDEN_MISMATCH
    else:
        report.outcome = OUTCOME_BIT_EXACT if report.golden["bit_exact"] else OUTCOME_PASS
    return report


def cases(args) -> list:
    if not args.plan:
        if not args.model:
            raise InsideError("pass --model DIR (or --plan with several cases)")
        return [args]
    try:
        plan = json.loads(args.plan)
        return [parse_args([*entry["args"], "--name", entry["name"]]) for entry in plan]
    except (ValueError, KeyError, TypeError) as error:
        raise InsideError(f"--plan is not a JSON list of {{name, args}} ({error})") from None


def main(argv: Optional[Sequence[str]] = None) -> Optional[int]:
    quiet_tensorflow_logs()
    reports = {}
    for index, args in enumerate(cases(parse_args(argv))):
        started = STARTED if index == 0 else time.perf_counter()
        report = probe(args, first=index == 0)
        report.seconds = round(time.perf_counter() - started, 3)
        log(f"probe: {args.name}: outcome {report.outcome}")
        reports[args.name] = report.to_dict()
    emit_json(reports)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
