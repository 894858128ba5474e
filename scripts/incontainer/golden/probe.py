"""Drift-test cases inside one environment: for each, diagnose, import, check preprocessing, run the
golden probe layer by layer, check batch invariance, time it, and record the numerics it computed
with. One case per call, or several (--plan) that share this process's TensorFlow import: the host
groups the cases whose settings leave no state behind in a process. Prints {case: ProbeReport} as
one JSON object; the outcome is data, not an exit code, so the host compares it with what the matrix
expected. Exit 0 unless the probe itself breaks.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from typing import Optional, Sequence

from ..common import InsideError, emit_json, log, quiet_tensorflow_logs, run_main
from ..contract import (DEFAULT_BF16_TOLERANCE, FLAG_ALLOW_SOFT_PLACEMENT, FLAG_BF16_TOLERANCE, FLAG_CONVERSION_CACHE,
                        FLAG_LOAD_OP_LIBRARIES,
                        FLAG_PRECISION, FLAG_RUNTIME, MANIFEST_FILE, MODEL_FILE, MODULES, OUTCOME_BIT_EXACT, OUTCOME_PASS,
                        PRECISION_BF16, PRECISION_FP32, PRECISION_RUNTIME_DEFAULT, PRECISIONS, RUNTIME_ONNXRUNTIME,
                        RUNTIME_TENSORFLOW, RUNTIMES, STAGE_RUN, Code, ProbeReport,
                        FLAG_INTER_OP_THREADS, FLAG_INTRA_OP_THREADS, FLAG_MODEL, FLAG_PLAN, FLAG_PREPROCESSING)
from ..data.preprocess import PreprocessSpec, differing_fields, with_fields
from ..diagnosis.doctor import DoctorOptions, diagnose
from ..diagnosis.findings import WARNING
from ..graph import manifest as manifests
from ..graph.graphdef import classify_run_error, first_line
from ..runtimes.backends import ConversionFailed
from .check import (BATCH_DEPENDENT_CAUSE, batch_invariance, batch_limit, evaluate, golden_tensors, in_batches,
                    input_path_findings, missing_tensors, preprocessing_result, session_runner, with_precision_tolerance)

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
    parser.add_argument(FLAG_PLAN, help="JSON list of {name, args}: several cases in this one process")
    parser.add_argument("--name", default="case", help="the case's name in the output")
    parser.add_argument(FLAG_MODEL, help="model directory")
    parser.add_argument(FLAG_LOAD_OP_LIBRARIES, dest="load_op_libraries", action="store_true",
                        help="load the model's shipped op libraries")
    parser.add_argument(FLAG_ALLOW_SOFT_PLACEMENT, dest="allow_soft_placement", action="store_true")
    parser.add_argument(FLAG_PREPROCESSING, action="append", default=[], metavar="FIELD=VALUE",
                        help="run this runtime's preprocessing with a field changed (simulates serving code that "
                             "preprocesses differently)")
    parser.add_argument(FLAG_INTRA_OP_THREADS, type=int, default=0)
    parser.add_argument(FLAG_INTER_OP_THREADS, type=int, default=0)
    parser.add_argument("--latency-runs", type=int, default=3)
    parser.add_argument(FLAG_CONVERSION_CACHE, dest="conversion_cache", default=None,
                        help="a writable directory where ONNX conversions are kept between runs")
    parser.add_argument(FLAG_RUNTIME, dest="runtime", choices=RUNTIMES, default=RUNTIME_TENSORFLOW,
                        help="convert the graph in this process and run it in ONNX Runtime or OpenVINO")
    parser.add_argument(FLAG_PRECISION, dest="precision", choices=PRECISIONS + (PRECISION_RUNTIME_DEFAULT,),
                        default=PRECISION_FP32, help=f"{PRECISION_RUNTIME_DEFAULT}: leave the runtime's own choice "
                                                     "and judge it at fp32 tolerances")
    parser.add_argument(FLAG_BF16_TOLERANCE, dest="bf16_tolerance", type=float, default=DEFAULT_BF16_TOLERANCE)
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
    if args.runtime != RUNTIME_TENSORFLOW:
        diagnosis.for_runtime(args.runtime)
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
    here = with_fields(spec, args.preprocessing, FLAG_PREPROCESSING)
    report.preprocessing = preprocessing_result(manifest, arrays, here)
    if report.preprocessing is not None and args.preprocessing:
        # A case's override this model's spec already has (e.g. resize_library=tf2 on a TF2-resized model).
        report.preprocessing["override_unchanged"] = not differing_fields(here, spec).keys() - {"preset"}
    for code, cause, fix in input_path_findings(report.preprocessing):
        diagnosis.add(code, cause, fix, severity=WARNING)
    timing["preprocessing_s"] = round(time.perf_counter() - mark, 3)
    tensors = golden_tensors(manifest)
    # Where TensorFlow could not import the graph, the converter names what is missing.
    missing = missing_tensors(diagnosis.graph, list(tensors.values())) if diagnosis.graph is not None else []
    if missing:
        report.outcome, report.load_error = Code.MISSING_NODE, f"golden tensors {missing} are not in the graph"
        return report
    tf.config.experimental.enable_tensor_float_32_execution(False)
    input_tensor = manifests.tensor_of(manifest["inputs"][0])
    output = manifests.tensor_of(manifests.output_entry(manifest, "probabilities")
                                 or manifests.output_entry(manifest, "logits"))
    with contextlib.ExitStack() as stack:
        if args.runtime == RUNTIME_TENSORFLOW:
            config = tf.compat.v1.ConfigProto(allow_soft_placement=args.allow_soft_placement,
                                              intra_op_parallelism_threads=args.intra_op_threads,
                                              inter_op_parallelism_threads=args.inter_op_threads)
            session = stack.enter_context(tf.compat.v1.Session(graph=diagnosis.graph, config=config))
            run = session_runner(session, tensors, input_tensor)
            predict = lambda feed: {"out": session.run(output, {input_tensor: feed})}  # noqa: E731
            errors: tuple = (tf.errors.OpError,)
            report.runtime = {"name": RUNTIME_TENSORFLOW, "precision_declared": args.precision,
                              "precision_effective": PRECISION_FP32, "versions": {"tensorflow": tf.__version__}}
        else:
            mark = time.perf_counter()
            try:
                backend = converted_backend(args, diagnosis.graph_def, input_tensor, tensors)
            except ConversionFailed as failure:
                timing["conversion_s"] = round(time.perf_counter() - mark, 3)
                report.load_error = str(failure)
                diagnosis.add(Code.CONVERSION_FAILED, str(failure), "fix the graph in TensorFlow first (the findings "
                              "above name what), or serve it with TensorFlow")
                report.diagnosis, report.outcome = diagnosis.to_json(), Code.CONVERSION_FAILED
                report.runtime = {"name": args.runtime, "precision_declared": args.precision}
                return report
            timing["conversion_s"] = round(time.perf_counter() - mark, 3)
            run = backend.run
            output_key = next(entry["key"] for entry in manifest["golden"]["tensors"] if entry["name"] == output)
            predict = lambda feed: {"out": backend.run(feed)[output_key]}  # noqa: E731
            errors = (RuntimeError, ValueError)
            report.runtime = backend.describe()
            if backend.precision_effective != PRECISION_FP32 and args.precision == PRECISION_RUNTIME_DEFAULT:
                diagnosis.add(Code.REDUCED_PRECISION, f"{args.runtime} computed in {backend.precision_effective} "
                              "though no precision was declared (its default on this CPU); judged at fp32 tolerances",
                              f"declare the precision: {FLAG_PRECISION} fp32 (OpenVINO: INFERENCE_PRECISION_HINT=f32), "
                              f"or {FLAG_PRECISION} bf16 with a tolerance", severity=WARNING)
        judged = with_precision_tolerance(manifest, arrays, args.bf16_tolerance) \
            if args.precision == PRECISION_BF16 else manifest
        try:
            mark = time.perf_counter()
            report.golden = evaluate(run, judged, arrays)
            timing["golden_s"] = round(time.perf_counter() - mark, 3)
            invariance = batch_invariance(run, judged, arrays)
            report.golden["batch_invariance"] = invariance
        except errors as error:
            report.load_error = first_line(error)
            if args.runtime == RUNTIME_TENSORFLOW:
                diagnosis.confirm(classify_run_error(report.load_error), report.load_error, STAGE_RUN)
            else:
                diagnosis.add(Code.RUN_ERROR, f"{args.runtime} failed running the converted graph: "
                              f"{report.load_error}", "serve the graph with TensorFlow, or report the op to the "
                              "runtime's project")
            report.diagnosis, report.outcome = diagnosis.to_json(), diagnosis.outcome
            return report
        # One image, as a serving request sends it: the latency a case reports, not a throughput benchmark.
        batch = arrays[manifest["golden"]["input_key"]][:1]
        timings = []
        mark = time.perf_counter()
        for _ in range(max(1, args.latency_runs)):
            begin = time.perf_counter()
            in_batches(predict, batch, batch_limit(manifest))
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


def converted_backend(args, graph_def, input_tensor: str, tensors: dict):
    """The graph converted in memory (the probe's mounts are read-only) for ONNX Runtime or OpenVINO."""
    from ..runtimes import backends

    if args.runtime == RUNTIME_ONNXRUNTIME:
        model, how = backends.convert_onnx_kept(graph_def, input_tensor, tensors, args.model, args.conversion_cache)
        backend = backends.onnxruntime_backend(model, input_tensor, tensors, args.precision, args.intra_op_threads,
                                               args.inter_op_threads)
        backend.details["conversion"] = how
        return backend
    model = backends.read_openvino(os.path.join(args.model, MODEL_FILE), tensors, args.model)
    return backends.openvino_backend(model, tensors, args.precision, args.intra_op_threads)


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
