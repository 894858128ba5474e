"""The infer step: predict with a model directory on images, after checking the model is intact, can
run here (doctor: manifest, static, import) and computes the golden numbers here."""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import time
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import numpy as np

from ..common import (TIMINGS, InsideError, PreflightFailed, atomic_write_text, emit_json, host_paths, log,
                      quiet_tensorflow_logs, run_main)
from ..contract import (DEFAULT_BF16_TOLERANCE, FLAG_ALLOW_OP, FLAG_ALLOW_SOFT_PLACEMENT, FLAG_BATCH_SIZE,
                        FLAG_BF16_TOLERANCE, FLAG_FORMAT, FLAG_GOLDEN_ONLY, FLAG_GOLDEN_VERIFIED, FLAG_INTER_OP_THREADS,
                        FLAG_INTRA_OP_THREADS, FLAG_LOAD_OP_LIBRARIES, FLAG_MODEL, FLAG_ON_BAD_IMAGE, FLAG_OUTPUT,
                        FLAG_PRECISION, FLAG_RUNTIME, FLAG_TOP_K, MODEL_FILE, MODULES, PRECISION_FP32,
                        RUNTIMES, RUNTIME_FASTEST, RUNTIME_OPENVINO, RUNTIME_TENSORFLOW, STARTUP_KEY, Code, KeptGolden,
                        seconds_since_process_start)
from ..contract import (FLAG_GOLDEN_BOUND, FLAG_NO_XNNPACK, INFER_PRECISIONS, INFER_RUNTIMES, PRECISION_INT8,
                        QUANTIZED_MIN_TOP1_FOR_SPEED, QUANTIZED_PRECISIONS, RUNTIME_TFLITE, TFLITE_PRECISIONS,
                        quantized_runtimes)
from ..data.image_files import BadImageError, decode_image_file, for_spec, list_image_files
from ..diagnosis.findings import WARNING, group, summarize
from ..golden.check import check_outputs_only, input_path_findings, run_golden
from ..golden.session import ModelSession, SessionOptions
from ..graph import manifest as manifests
from ..graph.graphdef import classify_run_error, first_line
from ..graph.model_files import ModelLoader
from ..runtime import effective_numerics

FORMATS = ("jsonl", "csv")


@dataclass(frozen=True)
class InferConfig:
    model: str
    output: Optional[str]
    inputs: tuple
    format: str = "jsonl"
    top_k: int = 5
    batch_size: int = 16
    golden_only: bool = False
    on_bad_image: str = "fail"
    load_op_libraries: bool = False
    allow_soft_placement: bool = True
    runtime: str = RUNTIME_TENSORFLOW
    precision: str = PRECISION_FP32
    bf16_tolerance: float = DEFAULT_BF16_TOLERANCE
    startup: dict = field(default_factory=dict)  # phases timed before infer() (interpreter_s)
    golden_verified: Optional[str] = None  # an earlier passing golden check the host kept for this model and image
    allowed_ops: tuple = ()  # --allow-op: ops the graph scan lets through (recorded in the summary)
    threads: Optional[tuple] = None  # intra-/inter-op threads the host chose (0: TF's choice); None: the manifest's
    xnnpack: bool = True  # --runtime tflite: XNNPACK on (LiteRT's default)
    golden_bound: Optional[float] = None  # a quantized model's declared probability-error bound


def parse_args(argv: Optional[Sequence[str]]) -> InferConfig:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULES['infer']}", description=__doc__)
    parser.add_argument(FLAG_MODEL, required=True, help="model directory (model.pb, manifest.json, golden.npz)")
    parser.add_argument(FLAG_OUTPUT, help="predictions file (JSON lines or CSV)")
    parser.add_argument(FLAG_FORMAT, choices=FORMATS, default="jsonl")
    parser.add_argument(FLAG_TOP_K, type=int, default=5)
    parser.add_argument(FLAG_BATCH_SIZE, type=int, default=16)
    parser.add_argument(FLAG_GOLDEN_ONLY, action="store_true", help="only verify the golden probe")
    parser.add_argument(FLAG_ON_BAD_IMAGE, choices=("fail", "skip"), default="fail")
    parser.add_argument(FLAG_LOAD_OP_LIBRARIES, dest="load_op_libraries", action="store_true",
                        help="load the custom-op libraries shipped in the model's ops/ folder (runs their code)")
    parser.add_argument("--no-soft-placement", dest="allow_soft_placement", action="store_false",
                        help="fail on device pins to absent devices instead of placing those nodes on the CPU")
    parser.add_argument(FLAG_ALLOW_SOFT_PLACEMENT, dest="allow_soft_placement", action="store_true",
                        help=argparse.SUPPRESS)
    parser.add_argument(FLAG_RUNTIME, dest="runtime", choices=INFER_RUNTIMES + (RUNTIME_FASTEST,),
                        default=RUNTIME_TENSORFLOW,
                        help="onnxruntime/openvino run the model's converted artefact (converted/<runtime>/); "
                             f"{RUNTIME_FASTEST}: the fastest that passes the golden check at --precision")
    parser.add_argument(FLAG_PRECISION, dest="precision", choices=INFER_PRECISIONS, default=PRECISION_FP32)
    parser.add_argument(FLAG_NO_XNNPACK, dest="xnnpack", action="store_false",
                        help="--runtime tflite: LiteRT's builtin kernels without the XNNPACK delegate")
    parser.add_argument(FLAG_GOLDEN_BOUND, dest="golden_bound", type=float, default=None,
                        help="quantized precisions: the largest probability error the golden check accepts "
                             "(default: the bound measured at conversion)")
    parser.add_argument(FLAG_BF16_TOLERANCE, dest="bf16_tolerance", type=float, default=DEFAULT_BF16_TOLERANCE,
                        help="with --precision bf16: each golden tensor may differ by this fraction of its largest "
                             "magnitude")
    parser.add_argument(FLAG_GOLDEN_VERIFIED, dest="golden_verified", default=None,
                        help="JSON of an earlier passing golden check of this model in this image; used instead of "
                             "running the probe again only when the model's sha256 and the effective numerics match")
    parser.add_argument(FLAG_ALLOW_OP, dest="allow_op", action="append", default=[], metavar="OP",
                        help="let this op through the graph scan (repeatable; recorded in the summary)")
    parser.add_argument(FLAG_INTRA_OP_THREADS, type=int, default=None, help="default: the manifest's")
    parser.add_argument(FLAG_INTER_OP_THREADS, type=int, default=None, help="default: the manifest's")
    parser.add_argument("inputs", nargs="*", help="image files or directories (recursed, sorted)")
    args = parser.parse_args(argv)
    if not 0 < args.bf16_tolerance < 1:
        raise InsideError(f"{FLAG_BF16_TOLERANCE} must be between 0 and 1 (a fraction of each tensor's magnitude)")
    check_runtime_precision(args.runtime, args.precision, args.golden_bound)
    if not args.golden_only:
        if not args.inputs:
            raise InsideError("no inputs: pass image files or directories (or --golden-only)")
        if not args.output:
            raise InsideError("--output FILE is required unless --golden-only")
    if args.top_k < 1 or args.batch_size < 1:
        raise InsideError("--top-k and --batch-size must be >= 1")
    if (args.intra_op_threads is None) != (args.inter_op_threads is None) or min(
            args.intra_op_threads or 0, args.inter_op_threads or 0) < 0:
        raise InsideError(f"{FLAG_INTRA_OP_THREADS} and {FLAG_INTER_OP_THREADS} go together, each >= 0")
    threads = None if args.intra_op_threads is None else (args.intra_op_threads, args.inter_op_threads)
    return InferConfig(model=args.model, output=args.output, inputs=tuple(args.inputs), format=args.format,
                       top_k=args.top_k, batch_size=args.batch_size, golden_only=args.golden_only,
                       on_bad_image=args.on_bad_image, load_op_libraries=args.load_op_libraries,
                       allow_soft_placement=args.allow_soft_placement, runtime=args.runtime,
                       precision=args.precision, bf16_tolerance=args.bf16_tolerance,
                       golden_verified=args.golden_verified, allowed_ops=tuple(args.allow_op), threads=threads,
                       xnnpack=args.xnnpack, golden_bound=args.golden_bound)


def check_runtime_precision(runtime: str, precision: str, golden_bound: Optional[float]) -> None:
    """fp16/dynamic are TFLite's, int8 also OpenVINO's and ONNX Runtime's; TFLite computes none of bf16;
    a bound applies to the quantized precisions alone."""
    if runtime == RUNTIME_TFLITE and precision not in TFLITE_PRECISIONS:
        raise InsideError(f"{FLAG_RUNTIME} {RUNTIME_TFLITE} converts to {', '.join(TFLITE_PRECISIONS)}, not {precision}")
    computing = quantized_runtimes(precision)
    if runtime not in computing + (RUNTIME_FASTEST,) and precision in QUANTIZED_PRECISIONS:
        raise InsideError(f"{FLAG_PRECISION} {precision} is a conversion for {' or '.join(computing)} here; pass "
                          f"{FLAG_RUNTIME} {computing[0]}")
    if golden_bound is not None and not (precision in QUANTIZED_PRECISIONS and 0 < golden_bound <= 1):
        raise InsideError(f"{FLAG_GOLDEN_BOUND} is a probability error in (0, 1] for {', '.join(QUANTIZED_PRECISIONS)}")


def check_interface(graph_def, manifest: dict, path: str) -> None:
    """The manifest's input is a placeholder of the recorded shape and its outputs exist."""
    from ..graph.graphdef import placeholder_shape

    nodes = {node.name: node for node in graph_def.node}
    entry = manifest["inputs"][0]
    node = nodes.get(entry["name"])
    if node is None:
        raise InsideError(f"{path} has no input node {entry['name']!r} named in the manifest; manifest and model come "
                          "from different freezes", code=Code.MISSING_NODE)
    if node.op not in ("Placeholder", "PlaceholderV2"):
        raise InsideError(f"{path} node {entry['name']!r} is a {node.op}, not a Placeholder; name the real input "
                          "(coldchain adopt --input NAME)", code=Code.MISSING_NODE)
    shape = placeholder_shape(node)
    recorded = list(entry.get("shape") or [])
    if shape is not None and recorded and (len(shape) != len(recorded) or any(
            known is not None and known != size for known, size in zip(shape, recorded))):
        raise InsideError(f"{path} input {entry['name']!r} has shape {shape} but the manifest says {entry['shape']}; "
                          "model and manifest come from different freezes", code=Code.MANIFEST_INVALID)
    for output in manifest["outputs"]:
        if output["name"] not in nodes:
            raise InsideError(f"{path} has no output node {output['name']!r} named in the manifest; re-freeze without "
                              "changing output names, or re-adopt naming the graph's outputs", code=Code.MISSING_NODE)


class Predictor:
    """The model, verified, imported and checked against its golden, ready to predict batches: a
    ModelSession (golden/session.py) with infer's refusals, its error messages and its start-up timing."""

    def __init__(self, loader: ModelLoader, options: SessionOptions):
        if options.runtime == RUNTIME_TENSORFLOW and options.precision != PRECISION_FP32:
            raise InsideError(f"TensorFlow runs this graph in fp32 only here; declare {FLAG_PRECISION} fp32, or "
                              f"{FLAG_RUNTIME} openvino for {options.precision}")
        self.timing = {}
        self.runtime = None  # a converted runtime's description (TensorFlow's is infer's summary's own)
        self.outputs_only = None  # (key, runner): a converted model compiled for predictions alone
        mark = time.perf_counter()
        self.model = ModelSession(loader.files().require(), options)
        self.model_dir, self.manifest, self.arrays = self.model.model_dir, self.model.manifest, self.model.arrays
        self.spec = self.model.spec
        mark = self._phase("verify_s", mark)
        self.diagnosis = self._preflight()
        mark = self._phase("doctor_s", mark)
        self._open()
        self._phase("session_s", mark)

    def _preflight(self):
        """The doctor on the files read: nothing blocks running the graph, and its interface is the
        manifest's."""
        diagnosis = self.model.diagnose()
        model_file = os.path.join(self.model_dir, MODEL_FILE)
        if diagnosis.blocking_before_running:
            raise PreflightFailed(f"{model_file} cannot run on this TensorFlow: "
                                  f"{summarize(group(diagnosis.blocking_before_running))}", code=diagnosis.outcome)
        check_interface(diagnosis.graph_def, self.manifest, model_file)
        return diagnosis

    def _open(self) -> None:
        """The runtime on the model, its errors made the kit's messages; a converted runtime predicts
        with the model compiled for the predictions alone."""
        model = self.model
        missing = model.missing_tensors()
        if missing:
            raise InsideError(f"model has no tensors {missing} recorded in the golden probe; model and manifest come "
                              "from different freezes", code=Code.MANIFEST_INVALID)
        model.open()
        self.numerics = effective_numerics(*model.threads)
        self.graph_optimization = model.graph_optimization
        self.limit, self.softmax_needed, self.judged = model.limit, model.softmax_needed, model.judged
        if model.options.runtime == RUNTIME_TENSORFLOW:
            self.golden_run, self.predict = self.guard(model.golden_run), self.guard(model.predict)
            return
        record = model.artefact
        self.runtime = {**model.backend.describe(), "artefact": {"files": record["files"],
                                                                 "converted_with": record["versions"],
                                                                 "conversion_s": record.get("conversion_s")}}
        runtime = model.options.runtime
        self.golden_run = self.guard_runtime(runtime, model.golden_run)
        key, alone = model.predictions_model()
        alone = self.guard_runtime(runtime, alone)
        self.outputs_only = (key, alone)
        self.predict = lambda feed: {"out": alone(feed)[key]}

    def _phase(self, name: str, since: float) -> float:
        now = time.perf_counter()
        self.timing[name] = round(now - since, 3)
        return now

    def guard_runtime(self, runtime: str, run):
        """ONNX Runtime and OpenVINO raise their own exception types (from C++): one message, no traceback."""
        def guarded(batch):
            try:
                return run(batch)
            except Exception as error:  # noqa: BLE001 - the runtimes share no base exception
                raise PreflightFailed(f"{self.model_dir}: running the {runtime} artefact failed here: "
                                      f"{first_line(error)}", code=Code.RUN_ERROR) from None
        return guarded

    def guard(self, run):
        """Runtime errors (a device, a kernel) become the kit's message, never a traceback."""
        import tensorflow as tf

        def guarded(batch):
            try:
                return run(batch)
            except tf.errors.OpError as error:
                message = first_line(error)
                code = classify_run_error(message)
                raise PreflightFailed(f"{self.model_dir}: running the graph failed here ({code}): {message}",
                                      code=code) from None
        return guarded

    def images_per_second(self, batch: int = 8, runs: int = 3) -> float:
        """This runtime's throughput on the golden inputs at `batch` (median after a warm-up)."""
        inputs = self.arrays[self.manifest["golden"]["input_key"]]
        feed = np.ascontiguousarray(np.resize(inputs, (batch,) + inputs.shape[1:]))
        self.probabilities(feed)
        timings = []
        for _ in range(runs):
            start = time.perf_counter()
            self.probabilities(feed)
            timings.append(time.perf_counter() - start)
        return batch / sorted(timings)[len(timings) // 2]

    def check_golden(self) -> dict:
        mark = time.perf_counter()
        try:
            return self._check_golden()
        finally:
            self._phase("golden_s", mark)

    def _check_golden(self) -> dict:
        """The golden check; passing it is this runtime running the graph, which settles the static
        findings that predicted it could not."""
        if self.model.options.precision in QUANTIZED_PRECISIONS:
            return self._check_quantized()
        summary = run_golden(self.golden_run, self.model_dir, self.judged, self.arrays, self.spec)
        for code, cause, fix in input_path_findings(summary.get("preprocessing")):
            self.diagnosis.add(code, cause, fix, severity=WARNING)
        if self.outputs_only is not None:
            key, alone = self.outputs_only
            summary["predictions_model"] = check_outputs_only(alone, [key], self.model_dir, self.judged, self.arrays)
        self.diagnosis.ran("ran the golden probe")
        return summary

    def _check_quantized(self) -> dict:
        """The quantized golden check (golden/quantized.py) on the predictions model: top-1 agreement and
        the probability error within the model's bound, measured at conversion or declared."""
        from ..golden import quantized
        from ..golden.check import in_batches

        options, record = self.model.options, self.model.artefact or {}
        bound = quantized.resolve_bound(record.get("golden_bound"), options.golden_bound, options.precision,
                                        f"{self.model_dir}'s {options.runtime}-{options.precision} conversion.json")
        key, alone = self.outputs_only
        values = in_batches(lambda batch: {"out": alone(batch)[key]}, self.arrays[self.manifest["golden"]["input_key"]],
                            self.limit)["out"]
        advice = None
        if options.precision == PRECISION_INT8:  # which int8 instructions this CPU has, and the fix
            from ..runtime import cpu_flags

            advice = quantized.cpu_dependence(options.runtime, record, cpu_flags())
        summary = quantized.check(bound, quantized.as_probabilities(self.arrays[key], self.softmax_needed),
                                  quantized.as_probabilities(values, self.softmax_needed), self.model_dir,
                                  f"{options.runtime} {options.precision}", advice=advice)
        self.diagnosis.ran("ran the quantized golden check")
        return summary

    @property
    def warnings(self) -> list:
        return [finding.to_json() for finding in group(self.diagnosis.findings)]

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        from ..golden.check import in_batches

        values = in_batches(self.predict, batch, self.limit)["out"]
        values = values.reshape(values.shape[0], -1)
        if self.softmax_needed:
            shifted = np.exp(values - values.max(axis=1, keepdims=True))
            values = shifted / shifted.sum(axis=1, keepdims=True)
        return values

    def close(self) -> None:
        self.model.close()


def collect_inputs(inputs: Sequence[str]) -> list:
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            found = list_image_files(item)
            if not found:
                log(f"infer: directory {item} holds no image files")
            paths.extend(found)
        elif os.path.exists(item):
            paths.append(item)
        else:
            raise InsideError(f"input not found: {item}; pass existing image files or directories")
    return paths


def write_predictions(config: InferConfig, rows: list) -> None:
    if config.format == "jsonl":
        text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)
    else:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        top_k = max((len(row["top_k"]) for row in rows), default=config.top_k)
        writer.writerow(["path"] + [f"{kind}_{rank}" for rank in range(1, top_k + 1) for kind in ("label", "probability")])
        for row in rows:
            cells = [row["path"]]
            for entry in row["top_k"]:
                cells += [entry["label"], f"{entry['probability']:.6f}"]
            writer.writerow(cells)
        text = buffer.getvalue()
    atomic_write_text(config.output, text)


def session_options(config: InferConfig, runtime: str) -> SessionOptions:
    """infer's model session: the host's threads (else the manifest's), grappler's idle passes skipped, a converted
    runtime on the model's own verified artefact."""
    return SessionOptions(runtime=runtime, precision=config.precision, bf16_tolerance=config.bf16_tolerance,
                          load_op_libraries=config.load_op_libraries,
                          allow_soft_placement=config.allow_soft_placement, quick_graph_optimization=True,
                          artefact=True, allowed_ops=config.allowed_ops, threads=config.threads,
                          xnnpack=config.xnnpack, golden_bound=config.golden_bound)


def fastest(model_dir: str, config: InferConfig, loader: ModelLoader):
    """Every runtime that can compute at the declared precision, golden-checked, then timed at batch 8:
    the fastest that passed, and why (each candidate's result)."""
    candidates, kept = [], {}
    # A quantized model is a candidate only where the user declared its precision: never to win on speed alone.
    quantized = config.precision in QUANTIZED_PRECISIONS
    for runtime in INFER_RUNTIMES if quantized else RUNTIMES:
        skipped = (f"has no {config.precision} model here (TensorFlow Lite's converter makes it)"
                   if quantized and runtime not in quantized_runtimes(config.precision) else
                   f"computes fp32 only, {config.precision} declared"
                   if not quantized and config.precision != PRECISION_FP32 and runtime != RUNTIME_OPENVINO else None)
        if skipped:
            candidates.append({"runtime": runtime, "skipped": skipped})
            continue
        try:
            predictor = Predictor(loader, session_options(config, runtime))
            golden = predictor.check_golden()
        except InsideError as error:
            candidates.append({"runtime": runtime, "refused": str(error)})
            continue
        agreement = golden.get("top1_agreement", 1.0)
        if quantized and agreement < QUANTIZED_MIN_TOP1_FOR_SPEED:
            predictor.close()
            candidates.append({"runtime": runtime, "refused": f"keeps fp32's top-1 on {agreement:.2f} of the golden "
                               f"images, under the {QUANTIZED_MIN_TOP1_FOR_SPEED} a model picked for speed needs"})
            continue
        speed = predictor.images_per_second()
        candidates.append({"runtime": runtime, "golden_ok": golden["ok"], "images_per_second_batch_8": round(speed, 2),
                           "precision_effective": (predictor.runtime or {}).get("precision_effective",
                                                                                PRECISION_FP32)})
        kept[runtime] = (predictor, golden, speed)
    if not kept:
        raise PreflightFailed(f"{model_dir}: no runtime passes the golden check at {config.precision}: " + "; ".join(
            f"{c['runtime']}: {c.get('refused') or c.get('skipped')}" for c in candidates), code=Code.GOLDEN_MISMATCH)
    picked = max(kept, key=lambda name: kept[name][2])
    for name, (predictor, _, _) in kept.items():
        if name != picked:
            predictor.close()
    predictor, golden, speed = kept[picked]
    others = ", ".join(f"{c['runtime']} {c.get('images_per_second_batch_8', '-')}" for c in candidates if c["runtime"] != picked)
    why = (f"{picked} passed the golden check at {config.precision} and was fastest at batch 8 "
           f"({speed:.1f} images/s; {others})")
    log(f"infer: picked {why}")
    return predictor, golden, {"picked": picked, "why": why, "candidates": candidates}


def model_directory(model: str) -> str:
    return (os.path.dirname(model) or ".") if os.path.isfile(model) else model


def infer(config: InferConfig, loader: Optional[ModelLoader] = None) -> dict:
    """`loader`: the model directory's, started before TensorFlow's import (main); read here otherwise."""
    model_dir = model_directory(config.model)
    loader = loader or ModelLoader(model_dir)
    choice, golden = None, None
    if config.runtime == RUNTIME_FASTEST:
        predictor, golden, choice = fastest(model_dir, config, loader)
    else:
        predictor = Predictor(loader, session_options(config, config.runtime))
    manifest = predictor.manifest
    summary: dict = {"model": manifest["model"]["sha256"], "numerics": predictor.numerics,
                     "runtime": predictor.runtime or {"name": RUNTIME_TENSORFLOW, "precision_declared": config.precision,
                                                      "precision_effective": PRECISION_FP32,
                                                      "graph_optimization": predictor.graph_optimization}}
    if choice:
        summary["runtime_choice"] = choice
    try:
        summary["golden"] = golden or verified_earlier(config, summary) or predictor.check_golden()
        summary["preflight_warnings"] = predictor.warnings
        summary["allowed_ops"] = sorted(set(config.allowed_ops))  # the scan's override, recorded
        log(f"infer: golden probe ok ({summary['golden']['top1']['agree']}/{summary['golden']['top1']['count']} "
            f"top-1 agree{', kept from ' + str(summary['golden']['cached']['verified_at']) if 'cached' in summary['golden'] else ''})")
        if (summary["golden"].get("precision_rule") or {}).get("budget") is False:  # a manifest from before it
            log(f"infer: {summary['golden']['precision_rule']['text']}")
        if config.golden_only:
            summary[STARTUP_KEY] = startup(config, predictor)
            return summary
        paths = collect_inputs(config.inputs)
        if not paths:
            raise InsideError("no images found in the given inputs; pass image files or directories holding images")
        classes = manifests.num_classes(manifest, predictor.arrays) or len(manifest["labels"])
        top_k = min(config.top_k, classes)
        rows, skipped = [], []
        start = time.perf_counter()
        spec = predictor.spec
        for begin in range(0, len(paths), config.batch_size):
            batch_paths, batch_arrays = [], []
            for path in paths[begin:begin + config.batch_size]:
                try:
                    batch_arrays.append(spec.apply(decode_image_file(path, **for_spec(spec))))
                    batch_paths.append(path)
                except BadImageError as error:
                    if config.on_bad_image == "fail":
                        raise BadImageError(f"{error} (or pass --on-bad-image skip)") from None
                    log(f"infer: skipping: {error}")
                    skipped.append(host_paths(path))
            if not batch_arrays:
                continue
            probabilities = predictor.probabilities(np.stack(batch_arrays))
            if "first_batch_s" not in predictor.timing:
                predictor.timing["first_batch_s"] = round(time.perf_counter() - start, 3)
            for path, row in zip(batch_paths, probabilities):
                order = np.argsort(-row, kind="stable")[:top_k]
                rows.append({"path": host_paths(path), "top_k": [
                    {"label": manifests.label_for(manifest, int(i)), "probability": round(float(row[i]), 6)}
                    for i in order]})
        seconds = time.perf_counter() - start
    finally:
        predictor.close()
    write_predictions(config, rows)
    summary[STARTUP_KEY] = startup(config, predictor)
    summary["folder_accuracy"] = folder_accuracy(rows, manifest["labels"])
    summary.update({"images": len(rows), "skipped": skipped, "seconds": round(seconds, 3),
                    "images_per_second": round(len(rows) / max(seconds, 1e-9), 2), "output": config.output})
    return summary


def verified_earlier(config: InferConfig, summary: dict) -> Optional[dict]:
    """The golden check this model passed before in this image, when it would compute the same numbers
    now: the same model bytes (their sha256 was verified just now), the same runtime and precision,
    and the same effective numerics (oneDNN as TF decided it, ISA, threads). Otherwise None: run it."""
    if not config.golden_verified or config.golden_only:  # asked for the check itself: run it
        return None
    try:
        with open(config.golden_verified) as handle:
            earlier = KeptGolden.from_json(handle.read())
        differing = earlier.differences(summary)
        if differing or earlier.golden.get("ok") is not True:
            log(f"infer: the kept golden check does not apply ({', '.join(differing) or 'it failed'}"
                " differs); running the probe")
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        log(f"infer: the kept golden check is unreadable ({error}); running the probe")
        return None
    log(f"infer: golden probe passed earlier for this model, image and numerics ({earlier.verified_at}); "
        "not run again")
    return earlier.reused()


def startup(config: InferConfig, predictor: Predictor) -> dict:
    """Where the time to the first prediction went inside the container (contract.STARTUP_PHASES)."""
    return {**config.startup, **TIMINGS, **predictor.timing, "container_process_s": seconds_since_process_start()}


def folder_accuracy(rows: list, labels: Sequence[str]) -> Optional[dict]:
    """Where every image sits in a folder named after a label (the held-out split's layout),
    the frozen graph's own top-1 accuracy; None for unlabelled inputs."""
    known = set(labels)
    truths = [os.path.basename(os.path.dirname(row["path"])) for row in rows]
    if not rows or not all(truth in known for truth in truths):
        return None
    hits = sum(row["top_k"][0]["label"] == truth for row, truth in zip(rows, truths))
    return {"top1": round(hits / len(rows), 4), "images": len(rows)}


def main(argv: Optional[Sequence[str]] = None) -> Optional[int]:
    entered = seconds_since_process_start()
    config = parse_args(argv)
    loader = ModelLoader(model_directory(config.model)).start()  # read and hashed while TensorFlow imports
    quiet_tensorflow_logs()
    emit_json(infer(replace(config, startup={"interpreter_s": entered}), loader))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
