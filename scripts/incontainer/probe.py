"""One drift-test case inside one environment: diagnose, load, check preprocessing, run the golden
probe layer by layer, time it. Prints one JSON object; the outcome is data, not an exit code, so
the host can compare it with what the matrix expected. Exit 0 unless the probe itself breaks.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import asdict, replace
from typing import Sequence

from .common import InsideError, log, quiet_tensorflow_logs, run_main
from .doctor import DoctorOptions, diagnose
from .manifest import load_manifest
from .preprocess import PreprocessSpec


def parse_args(argv: Sequence[str] | None):
    parser = argparse.ArgumentParser(prog="python -m incontainer.probe", description=__doc__)
    parser.add_argument("--model", required=True, help="model directory")
    parser.add_argument("--load-op-libraries", action="store_true", help="load the model's shipped op libraries")
    parser.add_argument("--allow-soft-placement", action="store_true")
    parser.add_argument("--preprocessing", action="append", default=[], metavar="FIELD=VALUE",
                        help="run this runtime's preprocessing with a field changed (simulates serving code that "
                             "preprocesses differently)")
    parser.add_argument("--intra-op-threads", type=int, default=0)
    parser.add_argument("--inter-op-threads", type=int, default=0)
    parser.add_argument("--latency-runs", type=int, default=5)
    return parser.parse_args(argv)


def overridden_spec(spec: PreprocessSpec, overrides: Sequence[str]) -> PreprocessSpec:
    changes = {}
    for item in overrides:
        key, _, value = item.partition("=")
        if key not in spec.to_json():
            raise InsideError(f"--preprocessing {item}: unknown field {key!r} (fields: {', '.join(spec.to_json())})")
        current = getattr(spec, key)
        changes[key] = type(current)(value) if not isinstance(current, tuple) else \
            tuple(float(part) for part in value.split(","))
    changed = replace(spec, **changes)
    changed.validate("--preprocessing")
    return changed


def probe(args) -> dict:
    from .infer import check_golden_preprocessing, check_interface, evaluate_golden, load_golden

    started = time.perf_counter()
    diagnosis = diagnose(DoctorOptions(model=args.model, load_shipped_op_libraries=args.load_op_libraries,
                                       allow_soft_placement=args.allow_soft_placement))
    report = {"diagnosis": diagnosis.to_json(), "loaded": False, "outcome": None, "load_error": None,
              "preprocessing": None, "golden": None, "latency": None}
    if diagnosis.blocking:
        report["outcome"] = diagnosis.outcome
        return _done(report, started)

    import tensorflow as tf

    manifest = load_manifest(args.model)
    spec = PreprocessSpec.from_json(manifest["preprocessing"], "manifest.json")
    input_tensor, _, _ = check_interface(diagnosis.graph_def, manifest, os.path.join(args.model, "model.pb"))
    graph = tf.Graph()
    try:
        with graph.as_default():
            tf.compat.v1.import_graph_def(diagnosis.graph_def, name="")
    except (ValueError, tf.errors.OpError) as error:
        # The doctor should have named this already; record TF's words so the gap is visible.
        report.update(outcome="load-error", load_error=str(error).splitlines()[0][:500])
        return _done(report, started)
    report["loaded"] = True

    arrays = load_golden(args.model, manifest)
    runtime_spec = overridden_spec(spec, args.preprocessing)
    report["preprocessing"] = check_golden_preprocessing(manifest, arrays, runtime_spec)

    tf.config.experimental.enable_tensor_float_32_execution(False)
    config = tf.compat.v1.ConfigProto(allow_soft_placement=args.allow_soft_placement,
                                      intra_op_parallelism_threads=args.intra_op_threads,
                                      inter_op_parallelism_threads=args.inter_op_threads)
    with tf.compat.v1.Session(graph=graph, config=config) as session:
        try:
            report["golden"] = evaluate_golden(session, manifest, arrays, input_tensor)
        except tf.errors.OpError as error:
            report.update(outcome="run-error", load_error=str(error).splitlines()[0][:500])
            return _done(report, started)
        batch = arrays[manifest["golden"]["input_key"]]
        timings = []
        for _ in range(max(1, args.latency_runs)):
            begin = time.perf_counter()
            session.run("probabilities:0", {input_tensor: batch})
            timings.append(time.perf_counter() - begin)
        median = statistics.median(timings)
        report["latency"] = {"batch": int(batch.shape[0]), "runs": len(timings), "median_ms": round(median * 1e3, 3),
                             "images_per_second": round(batch.shape[0] / median, 2),
                             "input_shape": [int(dim) for dim in batch.shape]}
    if report["preprocessing"] is not None and not report["preprocessing"]["ok"]:
        report["outcome"] = "preprocessing-mismatch"
    elif not report["golden"]["ok"]:
        report["outcome"] = "golden-mismatch"
    else:
        report["outcome"] = "bit-exact" if report["golden"]["bit_exact"] else "pass"
    return _done(report, started)


def _done(report: dict, started: float) -> dict:
    report["seconds"] = round(time.perf_counter() - started, 3)
    return report


def main(argv: Sequence[str] | None = None) -> int | None:
    quiet_tensorflow_logs()
    args = parse_args(argv)
    report = probe(args)
    log(f"probe: outcome {report['outcome']}")
    print(json.dumps(report, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
