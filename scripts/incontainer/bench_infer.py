"""Inference speed of a frozen model in THIS runtime: TensorFlow (the inference path) or ONNX
Runtime (the same graph converted with tf2onnx). Every variant's outputs are checked against the
golden probe first; a runtime that computes different numbers is reported as wrong, not timed.

Prints one JSON object: per batch size, median images/s and p50/p99 latency over repeated runs
after a warm-up; the graph's FLOPs per image; and, for TF, which op types take the time (from
TF's own step stats, not guesses).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import time
from typing import Sequence

import numpy as np

from .common import InsideError, log, quiet_tensorflow_logs, run_main
from .manifest import load_manifest


def parse_args(argv: Sequence[str] | None):
    parser = argparse.ArgumentParser(prog="python -m incontainer.bench_infer", description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--runtime", choices=("tensorflow", "onnxruntime"), default="tensorflow")
    parser.add_argument("--batch", type=int, action="append", default=[], help="batch size (repeatable)")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per batch size")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--intra-op-threads", type=int, default=0)
    parser.add_argument("--inter-op-threads", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="TF only: op types by time, from step stats")
    args = parser.parse_args(argv)
    args.batch = args.batch or [1, 8, 32]
    if min(args.batch) < 1 or args.repeats < 1:
        raise InsideError("--batch and --repeats must be >= 1")
    return args


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(fraction * (len(ordered) - 1)))))]


def time_batches(run, inputs: np.ndarray, batches: Sequence[int], repeats: int, warmup: int) -> list[dict]:
    results = []
    for batch in batches:
        feed = np.ascontiguousarray(np.resize(inputs, (batch,) + inputs.shape[1:]))
        for _ in range(warmup):
            run(feed)
        timings = []
        for _ in range(repeats):
            start = time.perf_counter()
            run(feed)
            timings.append(time.perf_counter() - start)
        median = statistics.median(timings)
        results.append({"batch": batch, "repeats": repeats, "images_per_second": round(batch / median, 3),
                        "p50_ms": round(median * 1e3, 3), "p99_ms": round(percentile(timings, 0.99) * 1e3, 3),
                        "min_ms": round(min(timings) * 1e3, 3)})
        log(f"bench_infer: batch {batch}: {batch / median:.2f} images/s (p50 {median * 1e3:.1f} ms)")
    return results


def conv_flops(graph_def, height: int, width: int) -> dict:
    """Multiply-adds of Conv2D/MatMul at batch 1 (x2 = FLOPs): what the roofline divides by."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        image = tf.compat.v1.placeholder(tf.float32, [1, height, width, 3])
        tf.compat.v1.import_graph_def(graph_def, input_map={"input:0": image}, name="g")
    macs = collections.Counter()
    for operation in graph.get_operations():
        if operation.type == "Conv2D":
            kernel = operation.inputs[1].shape.as_list()
            out = operation.outputs[0].shape.as_list()
            if None not in kernel and None not in out:
                macs["Conv2D"] += kernel[0] * kernel[1] * kernel[2] * kernel[3] * out[1] * out[2]
        elif operation.type == "MatMul":
            a, b = operation.inputs[0].shape.as_list(), operation.inputs[1].shape.as_list()
            if None not in a and None not in b:
                macs["MatMul"] += a[0] * a[1] * b[1]
    total = sum(macs.values())
    return {"flops_per_image": 2 * total, "gflops_per_image": round(2 * total / 1e9, 3),
            "by_op": {op: 2 * count for op, count in macs.items()}}


def golden_check(outputs: dict, arrays: dict, manifest: dict) -> dict:
    from .golden import compare

    results = {}
    for entry in manifest["golden"]["tensors"]:
        if entry["key"] in outputs:
            results[entry["key"]] = compare(entry["key"], arrays[entry["key"]], outputs[entry["key"]],
                                            entry["abs_tol"], entry["rel_tol"])
    return {"ok": all(result["ok"] for result in results.values()), "tensors": results}


def bench_tensorflow(args, manifest, graph_def, arrays) -> dict:
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=args.intra_op_threads,
                                      inter_op_parallelism_threads=args.inter_op_threads)
    with tf.compat.v1.Session(graph=graph, config=config) as session:
        logits, probabilities = session.run(["logits:0", "probabilities:0"], {"input:0": arrays["input"]})
        check = golden_check({"logits": logits, "probabilities": probabilities}, arrays, manifest)
        report = {"golden": check}
        if not check["ok"]:
            return report
        report["batches"] = time_batches(lambda feed: session.run("probabilities:0", {"input:0": feed}),
                                         arrays["input"], args.batch, args.repeats, args.warmup)
        if args.profile:
            report["profile"] = profile_ops(session, arrays["input"], max(args.batch))
    return report


def profile_ops(session, inputs: np.ndarray, batch: int) -> list[dict]:
    import tensorflow as tf

    feed = np.resize(inputs, (batch,) + inputs.shape[1:])
    options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
    metadata = tf.compat.v1.RunMetadata()
    session.run("probabilities:0", {"input:0": feed}, options=options, run_metadata=metadata)
    by_type = collections.Counter()
    for device in metadata.step_stats.dev_stats:
        for node in device.node_stats:
            op_type = node.timeline_label.split("=", 1)[-1].split("(", 1)[0].strip() if "=" in node.timeline_label \
                else node.node_name.split(":")[0]
            by_type[op_type] += node.all_end_rel_micros
    total = sum(by_type.values()) or 1
    return [{"op": op, "microseconds": micros, "share": round(micros / total, 4)}
            for op, micros in by_type.most_common(8)]


def bench_onnxruntime(args, manifest, graph_def, arrays) -> dict:
    import onnxruntime
    import tf2onnx

    start = time.perf_counter()
    model_proto, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=["input:0"],
                                                    output_names=["logits:0", "probabilities:0"], opset=17)
    conversion_s = time.perf_counter() - start
    options = onnxruntime.SessionOptions()
    if args.intra_op_threads:
        options.intra_op_num_threads = args.intra_op_threads
    if args.inter_op_threads:
        options.inter_op_num_threads = args.inter_op_threads
    session = onnxruntime.InferenceSession(model_proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    logits, probabilities = session.run(["logits:0", "probabilities:0"], {"input:0": arrays["input"]})
    check = golden_check({"logits": logits, "probabilities": probabilities}, arrays, manifest)
    report = {"golden": check, "conversion_s": round(conversion_s, 2), "onnxruntime": onnxruntime.__version__,
              "tf2onnx": tf2onnx.__version__}
    if check["ok"]:
        report["batches"] = time_batches(lambda feed: session.run(["probabilities:0"], {"input:0": feed}),
                                         arrays["input"], args.batch, args.repeats, args.warmup)
    return report


def main(argv: Sequence[str] | None = None) -> int | None:
    quiet_tensorflow_logs()
    args = parse_args(argv)
    from .infer import load_golden, load_verified_graph_def

    manifest = load_manifest(args.model)
    graph_def = load_verified_graph_def(args.model, manifest)
    arrays = load_golden(args.model, manifest)
    height, width = manifest["inputs"][0]["shape"][1:3]
    import tensorflow as tf

    report = {"runtime": args.runtime, "tensorflow": tf.__version__, "model_sha256": manifest["model"]["sha256"],
              "input_size": [height, width], "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
              "threads": {"intra_op": args.intra_op_threads, "inter_op": args.inter_op_threads},
              "flops": conv_flops(graph_def, height, width),
              "transforms": manifest.get("graph", {}).get("transforms", {})}
    if args.runtime == "tensorflow":
        report.update(bench_tensorflow(args, manifest, graph_def, arrays))
    else:
        report.update(bench_onnxruntime(args, manifest, graph_def, arrays))
    print(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
