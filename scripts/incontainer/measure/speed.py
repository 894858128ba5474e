"""The inference speed of a frozen model in THIS runtime: TensorFlow (the inference path) or ONNX
Runtime (the same graph converted with tf2onnx). Every variant's outputs are checked against the
golden probe first; a runtime that computes different numbers is reported as wrong, not timed.

Prints one JSON object: per batch size, median images/s and p50/p99 latency over repeated runs
after a warm-up; the graph's FLOPs per image; and, for TF, which op types take the time (from
TF's own step stats, not guesses).
"""
from __future__ import annotations

import argparse
import collections
import os
import statistics
import time
from typing import Optional, Sequence

import numpy as np

from ..common import InsideError, emit_json, log, quiet_tensorflow_logs, run_main
from ..contract import ENV_ONEDNN, GOLDEN_INPUT_KEY, GOLDEN_LOGITS_KEY, GOLDEN_PROBABILITIES_KEY, MODULES
from ..graph.manifest import load_golden_arrays, load_manifest, read_verified_model, tensor_of


def parse_args(argv: Optional[Sequence[str]]):
    parser = argparse.ArgumentParser(prog=f"python -m {MODULES['bench']}", description=__doc__)
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


def conv_flops(graph_def, input_name: str, height: int, width: int) -> dict:
    """Multiply-adds of Conv2D/MatMul at batch 1 (x2 = FLOPs): what the roofline divides by."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        image = tf.compat.v1.placeholder(tf.float32, [1, height, width, 3])
        tf.compat.v1.import_graph_def(graph_def, input_map={input_name: image}, name="g")
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
    from ..golden.compare import compare

    results = {}
    for entry in manifest["golden"]["tensors"]:
        if entry["key"] in outputs:
            results[entry["key"]] = compare(entry["key"], arrays[entry["key"]], outputs[entry["key"]],
                                            entry["abs_tol"], entry["rel_tol"])
    return {"ok": all(result["ok"] for result in results.values()), "tensors": results}


def io_names(manifest: dict) -> tuple:
    """(input tensor, {golden key: tensor}) for the outputs the golden records."""
    from ..graph.manifest import output_entry

    outputs = {}
    for key in (GOLDEN_LOGITS_KEY, GOLDEN_PROBABILITIES_KEY):
        entry = output_entry(manifest, key)
        if entry is not None:
            outputs[key] = tensor_of(entry)
    return tensor_of(manifest["inputs"][0]), outputs


def bench_tensorflow(args, manifest, graph_def, arrays) -> dict:
    import tensorflow as tf

    from ..runtime import effective_numerics

    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=args.intra_op_threads,
                                      inter_op_parallelism_threads=args.inter_op_threads)
    input_name, outputs = io_names(manifest)
    last = list(outputs.values())[-1]
    with tf.compat.v1.Session(graph=graph, config=config) as session:
        values = session.run(list(outputs.values()), {input_name: arrays[GOLDEN_INPUT_KEY]})
        check = golden_check(dict(zip(outputs, values)), arrays, manifest)
        report = {"golden": check, "numerics": effective_numerics(args.intra_op_threads, args.inter_op_threads)}
        if not check["ok"]:
            return report
        report["batches"] = time_batches(lambda feed: session.run(last, {input_name: feed}),
                                         arrays[GOLDEN_INPUT_KEY], args.batch, args.repeats, args.warmup)
        if args.profile:
            report["profile"] = profile_ops(session, input_name, last, arrays[GOLDEN_INPUT_KEY], max(args.batch))
    return report


def profile_ops(session, input_name: str, output: str, inputs: np.ndarray, batch: int) -> list:
    import tensorflow as tf

    feed = np.resize(inputs, (batch,) + inputs.shape[1:])
    options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
    metadata = tf.compat.v1.RunMetadata()
    session.run(output, {input_name: feed}, options=options, run_metadata=metadata)
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

    input_name, outputs = io_names(manifest)
    start = time.perf_counter()
    model_proto, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=[input_name],
                                                    output_names=list(outputs.values()), opset=17)
    conversion_s = time.perf_counter() - start
    options = onnxruntime.SessionOptions()
    if args.intra_op_threads:
        options.intra_op_num_threads = args.intra_op_threads
    if args.inter_op_threads:
        options.inter_op_num_threads = args.inter_op_threads
    session = onnxruntime.InferenceSession(model_proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    values = session.run(list(outputs.values()), {input_name: arrays[GOLDEN_INPUT_KEY]})
    check = golden_check(dict(zip(outputs, values)), arrays, manifest)
    report = {"golden": check, "conversion_s": round(conversion_s, 2), "onnxruntime": onnxruntime.__version__,
              "tf2onnx": tf2onnx.__version__}
    if check["ok"]:
        last = list(outputs.values())[-1]
        report["batches"] = time_batches(lambda feed: session.run([last], {input_name: feed}),
                                         arrays[GOLDEN_INPUT_KEY], args.batch, args.repeats, args.warmup)
    return report


def main(argv: Optional[Sequence[str]] = None) -> Optional[int]:
    quiet_tensorflow_logs()
    args = parse_args(argv)
    import tensorflow as tf

    from ..graph.graphdef import parse_graph_def

    manifest = load_manifest(args.model)
    graph_def = parse_graph_def(read_verified_model(args.model, manifest), args.model)
    arrays = load_golden_arrays(args.model, manifest)
    height, width = manifest["inputs"][0]["shape"][1:3]
    report = {"runtime": args.runtime, "tensorflow": tf.__version__, "model_sha256": manifest["model"]["sha256"],
              "input_size": [height, width], ENV_ONEDNN: os.environ.get(ENV_ONEDNN),
              "threads": {"intra_op": args.intra_op_threads, "inter_op": args.inter_op_threads},
              "flops": conv_flops(graph_def, tensor_of(manifest["inputs"][0]), height, width),
              "transforms": manifest.get("graph", {}).get("transforms", {})}
    if args.runtime == "tensorflow":
        report.update(bench_tensorflow(args, manifest, graph_def, arrays))
    else:
        report.update(bench_onnxruntime(args, manifest, graph_def, arrays))
    emit_json(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
