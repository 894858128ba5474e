"""The inference speed of a frozen model in THIS runtime: TensorFlow (the inference path), ONNX
Runtime (the same graph converted with tf2onnx) or OpenVINO (its TensorFlow frontend), at a declared
precision. Every variant's outputs are checked against the golden probe first (bf16 within its
declared tolerance); a runtime that computes different numbers is reported as wrong, not timed.

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
from ..contract import (DEFAULT_BF16_TOLERANCE, ENV_ONEDNN, FLAG_BATCH, FLAG_BF16_TOLERANCE, FLAG_IMAGES,
                        FLAG_INTER_OP_THREADS, FLAG_INTRA_OP_THREADS, FLAG_MODEL, FLAG_NO_XNNPACK, FLAG_PEAK,
                        FLAG_PRECISION, FLAG_PROFILE, FLAG_REPEATS, FLAG_RUNTIME, GOLDEN_INPUT_KEY, GOLDEN_LOGITS_KEY,
                        GOLDEN_PROBABILITIES_KEY, INFER_PRECISIONS, INFER_RUNTIMES, MODULES, PRECISION_FP32,
                        RUNTIME_TENSORFLOW, RUNTIME_TFLITE, per_run_target)
from ..golden.session import ModelSession, SessionOptions
from ..graph.manifest import tensor_of
from ..graph.model_files import ModelLoader


def parse_args(argv: Optional[Sequence[str]]):
    parser = argparse.ArgumentParser(prog=f"python -m {MODULES['bench']}", description=__doc__)
    parser.add_argument(FLAG_MODEL, required=True)
    parser.add_argument(FLAG_RUNTIME, dest="runtime", choices=INFER_RUNTIMES, default=RUNTIME_TENSORFLOW,
                        help=f"{RUNTIME_TFLITE}: the model's converted/tflite-<precision>/ artefact; openvino or "
                             "onnxruntime at int8: converted/<runtime>-int8/")
    parser.add_argument(FLAG_PRECISION, dest="precision", choices=INFER_PRECISIONS, default=PRECISION_FP32)
    parser.add_argument(FLAG_NO_XNNPACK, dest="xnnpack", action="store_false", help="tflite: without XNNPACK")
    parser.add_argument(FLAG_IMAGES, dest="images", default=None,
                        help="tflite, int8: held-out images, top-1 agreement with TensorFlow fp32 measured on them")
    parser.add_argument(FLAG_BF16_TOLERANCE, dest="bf16_tolerance", type=float, default=DEFAULT_BF16_TOLERANCE)
    parser.add_argument(FLAG_BATCH, type=int, action="append", default=[], help="batch size (repeatable)")
    parser.add_argument(FLAG_REPEATS, type=int, default=10, help="timed runs per batch size")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(FLAG_INTRA_OP_THREADS, type=int, default=0)
    parser.add_argument(FLAG_INTER_OP_THREADS, type=int, default=0)
    parser.add_argument(FLAG_PROFILE, action="store_true", help="TF only: op types by time, from step stats")
    parser.add_argument(FLAG_PEAK, action="store_true", help="also measure the CPU's fp32 peak with a GEMM")
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


def measured_peak(size: int = 1536, repeats: int = 5) -> dict:
    """The fp32 ceiling the roofline divides by, measured: the best of a few float32 GEMMs (NumPy's
    OpenBLAS, every core), not derived from a clock /proc/cpuinfo may not report."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    np.dot(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.dot(a, b)
        best = min(best, time.perf_counter() - start)
    gflops = 2 * size ** 3 / best / 1e9
    return {"gflops": round(gflops, 1), "derivation": f"measured: float32 GEMM {size}x{size}x{size}, best of "
                                                      f"{repeats}, NumPy {np.__version__} (OpenBLAS), all cores"}


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


def bench_tensorflow(args, model: ModelSession) -> dict:
    from ..runtime import effective_numerics

    manifest, arrays = model.manifest, model.arrays
    model.open()
    input_name, outputs = io_names(manifest)
    last = list(outputs.values())[-1]
    session = model.session
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


def bench_converted(args, model: ModelSession) -> dict:
    """ONNX Runtime or OpenVINO, converted here, golden-checked at the declared precision, then timed."""
    from ..golden.check import evaluate, only

    arrays, judged = model.arrays, model.judged
    model.open()
    backend = model.backend
    check = evaluate(backend.run, judged, arrays)
    report = {"golden": {"ok": check["ok"], "first_divergence": check["first_divergence"],
                         "tensors": {result["key"]: result for result in check["tensors"]}},
              "conversion_s": round(model.conversion_s, 2), "runtime": backend.describe(), **backend.versions}
    if not check["ok"]:
        return report
    # Timed like TensorFlow above and like infer predicts: the last output alone, golden-checked too.
    last, alone = model.predictions_model()
    outputs = evaluate(alone, only(judged, [last]), arrays)
    report["golden"]["predictions_model"] = {"ok": outputs["ok"], "keys": [last], "bit_exact": outputs["bit_exact"]}
    if outputs["ok"]:
        report["batches"] = time_batches(alone, arrays[GOLDEN_INPUT_KEY], args.batch, args.repeats, args.warmup)
    else:
        report["golden"]["ok"] = False
    return report


def bench_tflite(args, model: ModelSession) -> dict:
    """The model's TFLite artefact: golden-checked (fp32: the golden tolerances; quantized: the model's
    bound), its top-1 agreement with TensorFlow fp32 (the golden) and on held-out images, then timed
    on its predictions output alone, as infer predicts."""
    from ..golden import quantized
    from ..golden.check import evaluate, in_batches

    model.open()
    backend, arrays = model.backend, model.arrays
    key, alone = model.predictions_model()
    values = in_batches(lambda batch: {"out": alone(batch)[key]}, arrays[GOLDEN_INPUT_KEY], model.limit)["out"]
    reference = quantized.as_probabilities(arrays[key], model.softmax_needed)
    actual = quantized.as_probabilities(values, model.softmax_needed)
    if args.precision == PRECISION_FP32:
        check = evaluate(backend.run, model.judged, arrays)
        golden = {"ok": check["ok"], "first_divergence": check["first_divergence"],
                  "tensors": {result["key"]: result for result in check["tensors"]}}
    else:
        golden = quantized.summarize(quantized.resolve_bound((model.artefact or {}).get("golden_bound"), None,
                                                             args.precision, "its conversion.json"), reference, actual)
    agreement = {"golden_images": quantized.measure(reference, actual)["top1_agreement"],
                 "golden_image_count": len(reference)}
    if args.images:
        from ..golden.held_out import held_out_agreement

        agreement["held_out"] = held_out_agreement(model, alone, key, args.images)
    report = {"golden": golden, "top1_agreement_vs_tensorflow_fp32": agreement, "runtime": backend.describe(),
              "conversion": {name: (model.artefact or {}).get(name) for name in ("calibration", "golden_bound",
                                                                                 "golden_measured", "versions")}}
    if golden["ok"]:
        report["batches"] = time_batches(alone, arrays[GOLDEN_INPUT_KEY], args.batch, args.repeats, args.warmup)
    return report


def main(argv: Optional[Sequence[str]] = None) -> Optional[int]:
    quiet_tensorflow_logs()
    args = parse_args(argv)
    import tensorflow as tf

    # What is timed needs the model and its golden; labels or a preprocessing field edited since do not matter.
    # TFLite's and the int8 artefacts are the model's converted/<target>/, made beforehand.
    beforehand = per_run_target(args.runtime, args.precision) is not None
    model = ModelSession(ModelLoader.for_model(args.model).files().require(consistent=False), SessionOptions(
        runtime=args.runtime, precision=args.precision, bf16_tolerance=args.bf16_tolerance, allow_soft_placement=False,
        threads=(args.intra_op_threads, args.inter_op_threads), artefact=beforehand,
        xnnpack=args.xnnpack))
    manifest = model.manifest
    height, width = manifest["inputs"][0]["shape"][1:3]
    report = {"runtime": {"name": args.runtime, "precision_declared": args.precision,
                          "precision_effective": PRECISION_FP32}, "tensorflow": tf.__version__, "model_sha256": manifest["model"]["sha256"],
              "input_size": [height, width], ENV_ONEDNN: os.environ.get(ENV_ONEDNN),
              "threads": {"intra_op": args.intra_op_threads, "inter_op": args.inter_op_threads},
              "flops": conv_flops(model.graph_def, model.input_tensor, height, width),
              "transforms": manifest.get("graph", {}).get("transforms", {})}
    if args.runtime == RUNTIME_TENSORFLOW and args.precision != PRECISION_FP32:
        raise InsideError(f"TensorFlow is benchmarked in fp32 only; {FLAG_PRECISION} bf16 is for openvino")
    try:
        if args.runtime == RUNTIME_TENSORFLOW:
            report.update(bench_tensorflow(args, model))
            if args.peak:
                report["peak_fp32"] = measured_peak()
        elif beforehand:
            report.update(bench_tflite(args, model))
        else:
            report.update(bench_converted(args, model))
    finally:
        model.close()
    emit_json(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
