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
from typing import Dict, Optional, Sequence

from ..common import InsideError, emit_json, log, quiet_tensorflow_logs, run_main
from ..contract import (DEFAULT_BF16_TOLERANCE, FLAG_ALLOW_OP, FLAG_ALLOW_SOFT_PLACEMENT, FLAG_BF16_TOLERANCE,
                        FLAG_CONVERSION_CACHE, FLAG_CONVERTED, FLAG_INTER_OP_THREADS, FLAG_INTRA_OP_THREADS,
                        FLAG_LOAD_OP_LIBRARIES, FLAG_MODEL, FLAG_NO_XNNPACK, FLAG_PLAN, FLAG_PRECISION,
                        FLAG_PREPROCESSING, FLAG_RUNTIME, INFER_PRECISIONS, MODULES, OUTCOME_BIT_EXACT, OUTCOME_PASS,
                        PRECISION_FP32, PRECISION_INT8, PRECISION_RUNTIME_DEFAULT, PROBE_RUNTIMES,
                        QUANTIZED_PRECISIONS, RUNTIME_TENSORFLOW, RUNTIME_TFLITE, STAGE_RUN, Code, ProbeReport,
                        per_run_target)
from ..data.preprocess import differing_fields, with_fields
from ..diagnosis.findings import WARNING
from ..graph.graphdef import classify_run_error, first_line
from ..graph.model_files import ModelLoader
from ..runtimes.backends import ConversionFailed
from .check import (BATCH_DEPENDENT_CAUSE, batch_invariance, evaluate, in_batches, input_path_findings,
                    preprocessing_result)
from .session import ModelSession, SessionOptions

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
    parser.add_argument(FLAG_ALLOW_OP, dest="allow_op", action="append", default=[], metavar="OP",
                        help="let this op through the graph scan (repeatable; recorded in the diagnosis)")
    parser.add_argument(FLAG_PREPROCESSING, action="append", default=[], metavar="FIELD=VALUE",
                        help="run this runtime's preprocessing with a field changed (simulates serving code that "
                             "preprocesses differently)")
    parser.add_argument(FLAG_INTRA_OP_THREADS, type=int, default=0)
    parser.add_argument(FLAG_INTER_OP_THREADS, type=int, default=0)
    parser.add_argument("--latency-runs", type=int, default=3)
    parser.add_argument(FLAG_CONVERSION_CACHE, dest="conversion_cache", default=None,
                        help="a writable directory where ONNX conversions are kept between runs")
    parser.add_argument(FLAG_RUNTIME, dest="runtime", choices=PROBE_RUNTIMES, default=RUNTIME_TENSORFLOW,
                        help="convert the graph in this process and run it in ONNX Runtime or OpenVINO; tflite: "
                             f"run the artefact the drift run converted ({FLAG_CONVERTED})")
    parser.add_argument(FLAG_CONVERTED, dest="converted", default=None,
                        help="tflite: the folder holding tflite-<precision>/ (conversion.json and model.tflite)")
    parser.add_argument(FLAG_NO_XNNPACK, dest="xnnpack", action="store_false",
                        help="tflite: the builtin kernels alone, without XNNPACK")
    parser.add_argument(FLAG_PRECISION, dest="precision", choices=INFER_PRECISIONS + (PRECISION_RUNTIME_DEFAULT,),
                        default=PRECISION_FP32, help=f"{PRECISION_RUNTIME_DEFAULT}: leave the runtime's own choice "
                                                     "and judge it at fp32 tolerances")
    parser.add_argument(FLAG_BF16_TOLERANCE, dest="bf16_tolerance", type=float, default=DEFAULT_BF16_TOLERANCE)
    return parser.parse_args(argv)


def session_options(args) -> SessionOptions:
    """The probe's model session: the case's threads and soft placement, a converted runtime converted
    here (the mounts are read-only), kept in the conversion cache where there is one; TFLite the artefact
    the drift run converted once for all its cases."""
    beforehand = per_run_target(args.runtime, args.precision)
    if beforehand and not args.converted:
        raise InsideError(f"{FLAG_RUNTIME} {args.runtime} {FLAG_PRECISION} {args.precision} runs an artefact "
                          f"converted beforehand ({beforehand}): pass {FLAG_CONVERTED}")
    return SessionOptions(runtime=args.runtime, precision=args.precision, bf16_tolerance=args.bf16_tolerance,
                          load_op_libraries=args.load_op_libraries, allow_soft_placement=args.allow_soft_placement,
                          threads=(args.intra_op_threads, args.inter_op_threads),
                          conversion_cache=args.conversion_cache, allowed_ops=tuple(args.allow_op),
                          artefact=bool(beforehand), converted_root=args.converted if beforehand else None,
                          xnnpack=args.xnnpack)


def probe(args, first: bool = True, loaded: Optional[Dict[str, ModelLoader]] = None) -> ProbeReport:
    """One case. `loaded`: the model directories this process read already, by path (a plan's cases
    share the model's files; each case diagnoses and opens it with its own settings)."""
    from ..runtime import effective_numerics

    # Interpreter start and TensorFlow's import are paid once per process: by its first case.
    timing = {"process_start_to_main_s": seconds_since_process_start() if first else 0.0}
    mark = time.perf_counter()
    report = ProbeReport(numerics=effective_numerics(args.intra_op_threads, args.inter_op_threads), timing=timing)
    timing["import_tensorflow_s"] = round(time.perf_counter() - mark, 3)
    mark = time.perf_counter()
    loader = (loaded if loaded is not None else {}).setdefault(args.model, ModelLoader.for_model(args.model))
    model = ModelSession(loader.files(), session_options(args))
    diagnosis = model.diagnose()
    timing["diagnosis_s"] = round(time.perf_counter() - mark, 3)
    report.diagnosis = diagnosis.to_json()
    if diagnosis.blocking_before_running:
        report.outcome = diagnosis.outcome
        return report
    if model.manifest is None:
        raise InsideError(f"{args.model} has no usable manifest; adopt the model first (coldchain adopt)")
    report.loaded = True
    check_preprocessing(args, model, report)
    missing = model.missing_tensors()
    if missing:
        report.outcome, report.load_error = Code.MISSING_NODE, f"golden tensors {missing} are not in the graph"
        return report
    try:
        errors = open_runtime(args, model, report)
        if errors is None:
            return report
        invariance = run_golden(args, model, report, errors)
        if report.load_error is not None:
            return report
        latency(args, model, report)
    finally:
        model.close()
    return verdict(model, report, invariance)


def check_preprocessing(args, model: ModelSession, report: ProbeReport) -> None:
    """This runtime's preprocessing (with the case's overrides) on the golden's raw and encoded images."""
    mark = time.perf_counter()
    here = with_fields(model.spec, args.preprocessing, FLAG_PREPROCESSING)
    report.preprocessing = preprocessing_result(model.manifest, model.arrays, here)
    if report.preprocessing is not None and args.preprocessing:
        # A case's override this model's spec already has (e.g. resize_library=tf2 on a TF2-resized model).
        report.preprocessing["override_unchanged"] = not differing_fields(here, model.spec).keys() - {"preset"}
    for code, cause, fix in input_path_findings(report.preprocessing):
        model.diagnosis.add(code, cause, fix, severity=WARNING)
    report.timing["preprocessing_s"] = round(time.perf_counter() - mark, 3)


def open_runtime(args, model: ModelSession, report: ProbeReport) -> Optional[tuple]:
    """The case's runtime on the model: the exceptions it raises running it, or None where the
    conversion failed (a finding, and the case's outcome)."""
    diagnosis = model.diagnosis
    if args.runtime == RUNTIME_TENSORFLOW:
        import tensorflow as tf

        model.open()
        report.runtime = {"name": RUNTIME_TENSORFLOW, "precision_declared": args.precision,
                          "precision_effective": PRECISION_FP32, "versions": {"tensorflow": tf.__version__}}
        return (tf.errors.OpError,)
    mark = time.perf_counter()
    try:
        model.open()
    except ConversionFailed as failure:
        report.timing["conversion_s"] = round(time.perf_counter() - mark, 3)
        report.load_error = str(failure)
        diagnosis.add(Code.CONVERSION_FAILED, str(failure), "fix the graph in TensorFlow first (the findings "
                      "above name what), or serve it with TensorFlow")
        report.diagnosis, report.outcome = diagnosis.to_json(), Code.CONVERSION_FAILED
        report.runtime = {"name": args.runtime, "precision_declared": args.precision}
        return None
    report.timing["conversion_s"] = round(time.perf_counter() - mark, 3)
    backend = model.backend
    if model.conversion is not None:
        backend.details["conversion"] = model.conversion
    if model.artefact is not None:  # converted beforehand: how (calibration, the model's own bound)
        backend.details["artefact"] = {key: model.artefact.get(key) for key in (
            "runtime", "files", "calibration", "golden_measured", "golden_bound", "conversion_s", "quantization",
            "held_out") if key in model.artefact or key not in ("quantization", "held_out")}
    report.runtime = backend.describe()
    if backend.precision_effective != PRECISION_FP32 and args.precision == PRECISION_RUNTIME_DEFAULT:
        diagnosis.add(Code.REDUCED_PRECISION, f"{args.runtime} computed in {backend.precision_effective} "
                      "though no precision was declared (its default on this CPU); judged at fp32 tolerances",
                      f"declare the precision: {FLAG_PRECISION} fp32 (OpenVINO: INFERENCE_PRECISION_HINT=f32), "
                      f"or {FLAG_PRECISION} bf16 with a tolerance", severity=WARNING)
    return (RuntimeError, ValueError)


def run_golden(args, model: ModelSession, report: ProbeReport, errors: tuple) -> Optional[dict]:
    """The golden probe and batch invariance, judged at the declared precision; the batch invariance
    result. A runtime error is the case's load_error, and a finding."""
    diagnosis = model.diagnosis
    try:
        mark = time.perf_counter()
        if args.precision in QUANTIZED_PRECISIONS:
            # Judged by the model's own bound; a quantized model's batch invariance is not fp32's (the
            # fp32 cases of the same model check that).
            report.golden = quantized_golden(model, args.precision)
            report.timing["golden_s"] = round(time.perf_counter() - mark, 3)
            if args.precision == PRECISION_INT8 and not report.golden["ok"]:
                from .quantized import cpu_dependence

                diagnosis.add(Code.NUMERICS_DIFFER, *cpu_dependence(args.runtime, model.artefact or {},
                                                                    report.numerics.get("isa", [])), severity=WARNING)
            return None
        report.golden = evaluate(model.golden_run, model.judged, model.arrays)
        report.timing["golden_s"] = round(time.perf_counter() - mark, 3)
        invariance = batch_invariance(model.golden_run, model.judged, model.arrays)
        report.golden["batch_invariance"] = invariance
        return invariance
    except errors as error:
        report.load_error = first_line(error)
        if args.runtime == RUNTIME_TENSORFLOW:
            diagnosis.confirm(classify_run_error(report.load_error), report.load_error, STAGE_RUN)
        else:
            diagnosis.add(Code.RUN_ERROR, f"{args.runtime} failed running the converted graph: "
                          f"{report.load_error}", "serve the graph with TensorFlow, or report the op to the "
                          "runtime's project")
        report.diagnosis, report.outcome = diagnosis.to_json(), diagnosis.outcome
        return None


def quantized_golden(model: ModelSession, precision: str) -> dict:
    """The quantized golden check (golden/quantized.py) as data: top-1 agreement and the probability
    error on the golden images, within the bound recorded when the artefact was converted."""
    from . import quantized

    bound = quantized.resolve_bound((model.artefact or {}).get("golden_bound"), None, precision,
                                    f"the {(model.artefact or {}).get('runtime')} conversion.json")
    key = model.output_key
    values = in_batches(model.predict, model.arrays[model.manifest["golden"]["input_key"]], model.limit)["out"]
    return quantized.summarize(bound, quantized.as_probabilities(model.arrays[key], model.softmax_needed),
                               quantized.as_probabilities(values, model.softmax_needed))


def latency(args, model: ModelSession, report: ProbeReport) -> None:
    """One image, as a serving request sends it: the latency a case reports, not a throughput benchmark."""
    batch = model.arrays[model.manifest["golden"]["input_key"]][:1]
    timings = []
    mark = time.perf_counter()
    for _ in range(max(1, args.latency_runs)):
        begin = time.perf_counter()
        in_batches(model.predict, batch, model.limit)
        timings.append(time.perf_counter() - begin)
    report.timing["latency_s"] = round(time.perf_counter() - mark, 3)
    median = statistics.median(timings)
    report.latency = {"batch": int(batch.shape[0]), "runs": len(timings), "median_ms": round(median * 1e3, 3),
                      "images_per_second": round(batch.shape[0] / median, 2),
                      "input_shape": [int(dim) for dim in batch.shape]}


def verdict(model: ModelSession, report: ProbeReport, invariance: Optional[dict]) -> ProbeReport:
    """What running the graph settled (batch dependence confirmed, or the static findings refuted), then
    the case's outcome: a blocking finding, preprocessing, the golden tensors, or a pass."""
    diagnosis = model.diagnosis
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
    reports, loaded = {}, {}
    for index, args in enumerate(cases(parse_args(argv))):
        started = STARTED if index == 0 else time.perf_counter()
        report = probe(args, first=index == 0, loaded=loaded)
        report.seconds = round(time.perf_counter() - started, 3)
        log(f"probe: {args.name}: outcome {report.outcome}")
        reports[args.name] = report.to_dict()
    emit_json(reports)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
