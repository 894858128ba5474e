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
from ..contract import (DEFAULT_BF16_TOLERANCE, FLAG_ALLOW_SOFT_PLACEMENT, FLAG_BF16_TOLERANCE, FLAG_GOLDEN_VERIFIED,
                        FLAG_LOAD_OP_LIBRARIES,
                        FLAG_PRECISION, FLAG_RUNTIME, MANIFEST_FILE, MODEL_FILE, PRECISION_BF16, PRECISION_FP32,
                        PRECISIONS, RUNTIME_FASTEST, RUNTIME_ONNXRUNTIME, RUNTIME_OPENVINO, RUNTIME_TENSORFLOW,
                        RUNTIMES, STARTUP_KEY, Code, seconds_since_process_start,
                        FLAG_BATCH_SIZE, FLAG_FORMAT, FLAG_GOLDEN_ONLY, FLAG_MODEL, FLAG_ON_BAD_IMAGE, FLAG_OUTPUT,
                        FLAG_TOP_K, MODULES, KeptGolden)
from ..data.image_files import BadImageError, decode_image_file, for_spec, list_image_files
from ..data.preprocess import PreprocessSpec
from ..diagnosis.doctor import DoctorOptions, diagnose
from ..diagnosis.findings import WARNING, group, summarize
from ..golden.check import (batch_limit, check_outputs_only, golden_tensors, input_path_findings, missing_tensors,
                            run_golden, session_runner, with_precision_tolerance)
from ..graph import manifest as manifests
from ..graph.graphdef import classify_run_error, first_line
from ..runtime import effective_numerics, quick_graph_optimization

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
    parser.add_argument(FLAG_RUNTIME, dest="runtime", choices=RUNTIMES + (RUNTIME_FASTEST,), default=RUNTIME_TENSORFLOW,
                        help="onnxruntime/openvino run the model's converted artefact (converted/<runtime>/); "
                             f"{RUNTIME_FASTEST}: the fastest that passes the golden check at --precision")
    parser.add_argument(FLAG_PRECISION, dest="precision", choices=PRECISIONS, default=PRECISION_FP32)
    parser.add_argument(FLAG_BF16_TOLERANCE, dest="bf16_tolerance", type=float, default=DEFAULT_BF16_TOLERANCE,
                        help="with --precision bf16: each golden tensor may differ by this fraction of its largest "
                             "magnitude")
    parser.add_argument(FLAG_GOLDEN_VERIFIED, dest="golden_verified", default=None,
                        help="JSON of an earlier passing golden check of this model in this image; used instead of "
                             "running the probe again only when the model's sha256 and the effective numerics match")
    parser.add_argument("inputs", nargs="*", help="image files or directories (recursed, sorted)")
    args = parser.parse_args(argv)
    if not 0 < args.bf16_tolerance < 1:
        raise InsideError(f"{FLAG_BF16_TOLERANCE} must be between 0 and 1 (a fraction of each tensor's magnitude)")
    if not args.golden_only:
        if not args.inputs:
            raise InsideError("no inputs: pass image files or directories (or --golden-only)")
        if not args.output:
            raise InsideError("--output FILE is required unless --golden-only")
    if args.top_k < 1 or args.batch_size < 1:
        raise InsideError("--top-k and --batch-size must be >= 1")
    return InferConfig(model=args.model, output=args.output, inputs=tuple(args.inputs), format=args.format,
                       top_k=args.top_k, batch_size=args.batch_size, golden_only=args.golden_only,
                       on_bad_image=args.on_bad_image, load_op_libraries=args.load_op_libraries,
                       allow_soft_placement=args.allow_soft_placement, runtime=args.runtime,
                       precision=args.precision, bf16_tolerance=args.bf16_tolerance,
                       golden_verified=args.golden_verified)


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
    """The model, verified, imported and checked against its golden, ready to predict batches."""

    def __init__(self, model_dir: str, load_op_libraries: bool = False, allow_soft_placement: bool = True,
                 runtime: str = RUNTIME_TENSORFLOW, precision: str = PRECISION_FP32,
                 bf16_tolerance: float = DEFAULT_BF16_TOLERANCE):
        import tensorflow as tf

        if runtime == RUNTIME_TENSORFLOW and precision != PRECISION_FP32:
            raise InsideError(f"TensorFlow runs this graph in fp32 only here; declare {FLAG_PRECISION} fp32, or "
                              f"{FLAG_RUNTIME} openvino for {precision}")
        self.model_dir = model_dir
        self.runtime = None
        self.graph_optimization = None
        self.outputs_only = None  # (key, runner): a converted model compiled for predictions alone
        mark = time.perf_counter()
        self.timing = {}
        self.manifest = manifests.load_manifest(model_dir)
        self.arrays = manifests.load_golden_arrays(model_dir, self.manifest)
        problems = manifests.validate_directory(model_dir, self.manifest, self.arrays)
        if problems:
            raise manifests.ManifestInvalid(os.path.join(model_dir, MANIFEST_FILE), problems)
        manifests.read_verified_model(model_dir, self.manifest)
        self.spec = PreprocessSpec.from_json(self.manifest["preprocessing"], os.path.join(model_dir, MANIFEST_FILE))
        mark = self._phase("verify_s", mark)
        diagnosis = diagnose(DoctorOptions(model=model_dir, load_shipped_op_libraries=load_op_libraries,
                                           allow_soft_placement=allow_soft_placement, run=False))
        if runtime != RUNTIME_TENSORFLOW:
            diagnosis.for_runtime(runtime)
        if diagnosis.blocking_before_running:
            raise PreflightFailed(f"{os.path.join(model_dir, MODEL_FILE)} cannot run on this TensorFlow: "
                                  f"{summarize(group(diagnosis.blocking_before_running))}", code=diagnosis.outcome)
        self.diagnosis = diagnosis
        check_interface(diagnosis.graph_def, self.manifest, os.path.join(model_dir, MODEL_FILE))
        mark = self._phase("doctor_s", mark)
        threads = self.manifest.get("inference", {})
        intra, inter = int(threads.get("intra_op_threads", 0)), int(threads.get("inter_op_threads", 0))
        # TF32 (on by default on Ampere+ GPUs) rounds conv inputs to 10-bit mantissas, far outside the golden
        # tolerances; inference keeps full float32 like the CPU-computed golden.
        tf.config.experimental.enable_tensor_float_32_execution(False)
        self.numerics = effective_numerics(intra, inter)
        tensors = golden_tensors(self.manifest)
        self.session = None
        if runtime == RUNTIME_TENSORFLOW:
            config = tf.compat.v1.ConfigProto(allow_soft_placement=allow_soft_placement,
                                              intra_op_parallelism_threads=intra, inter_op_parallelism_threads=inter)
            self.graph_optimization = quick_graph_optimization(config)
            self.session = tf.compat.v1.Session(graph=diagnosis.graph, config=config)
        # Where TensorFlow could not import the graph (another runtime's custom op), the converter named it.
        missing = missing_tensors(diagnosis.graph, list(tensors.values())) if diagnosis.graph is not None else []
        if missing:
            raise InsideError(f"model has no tensors {missing} recorded in the golden probe; model and manifest come "
                              "from different freezes", code=Code.MANIFEST_INVALID)
        self.input_tensor = manifests.tensor_of(self.manifest["inputs"][0])
        self.limit = batch_limit(self.manifest)
        probabilities = manifests.output_entry(self.manifest, "probabilities")
        self.output_tensor = manifests.tensor_of(probabilities or manifests.output_entry(self.manifest, "logits"))
        self.softmax_needed = probabilities is None
        if runtime == RUNTIME_TENSORFLOW:
            self.golden_run = self.guard(session_runner(self.session, tensors, self.input_tensor))
            self.predict = self.guard(lambda feed: {"out": self.session.run(self.output_tensor,
                                                                            {self.input_tensor: feed})})
        else:
            self.golden_run, self.predict = self.converted(runtime, precision, tensors, intra, inter)
        if precision == PRECISION_BF16:
            self.judged = with_precision_tolerance(self.manifest, self.arrays, bf16_tolerance)
        else:
            self.judged = self.manifest
        self._phase("session_s", mark)

    def _phase(self, name: str, since: float) -> float:
        now = time.perf_counter()
        self.timing[name] = round(now - since, 3)
        return now

    def converted(self, runtime: str, precision: str, tensors: dict, intra: int, inter: int):
        """The model's verified converted artefact in ONNX Runtime or OpenVINO."""
        from ..runtimes import backends
        from ..runtimes.artefacts import load_record

        directory, record = load_record(self.model_dir, runtime, self.manifest)
        unknown = sorted(set(tensors.values()) - set(record.get("tensors", {}).values()))
        if unknown or record.get("input") != self.input_tensor:
            raise InsideError(f"{directory} was converted with other inputs/outputs than the manifest names "
                              f"({unknown or record.get('input')}); convert it again: coldchain convert "
                              f"--runtime {runtime} {self.model_dir}")
        if runtime == RUNTIME_ONNXRUNTIME:
            with open(os.path.join(directory, backends.ONNX_FILE), "rb") as handle:
                backend = backends.onnxruntime_backend(handle.read(), self.input_tensor, tensors, precision, intra,
                                                       inter)
        else:
            model = backends.read_openvino(os.path.join(directory, backends.OPENVINO_FILES[0]), tensors, directory)
            backend = backends.openvino_backend(model, tensors, precision, intra)
        self.runtime = {**backend.describe(), "artefact": {"files": record["files"], "converted_with": record["versions"],
                                                           "conversion_s": record.get("conversion_s")}}
        key = manifests.output_entry(self.manifest, "probabilities") or manifests.output_entry(self.manifest, "logits")
        output_key = next(entry["key"] for entry in self.manifest["golden"]["tensors"]
                          if entry["name"] == manifests.tensor_of(key))
        run = self.guard_runtime(runtime, backend.run)
        alone = self.guard_runtime(runtime, backend.outputs_only([output_key]))
        self.outputs_only = (output_key, alone)
        return run, lambda feed: {"out": alone(feed)[output_key]}

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
        summary = run_golden(self.golden_run, self.model_dir, self.judged, self.arrays, self.spec)
        for code, cause, fix in input_path_findings(summary.get("preprocessing")):
            self.diagnosis.add(code, cause, fix, severity=WARNING)
        if self.outputs_only is not None:
            key, alone = self.outputs_only
            summary["predictions_model"] = check_outputs_only(alone, [key], self.model_dir, self.judged, self.arrays)
        self.diagnosis.ran("ran the golden probe")
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
        if self.session is not None:
            self.session.close()


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


def fastest(model_dir: str, config: InferConfig):
    """Every runtime that can compute at the declared precision, golden-checked, then timed at batch 8:
    the fastest that passed, and why (each candidate's result)."""
    candidates, kept = [], {}
    for runtime in RUNTIMES:
        if config.precision != PRECISION_FP32 and runtime != RUNTIME_OPENVINO:
            candidates.append({"runtime": runtime, "skipped": f"computes fp32 only, {config.precision} declared"})
            continue
        try:
            predictor = Predictor(model_dir, config.load_op_libraries, config.allow_soft_placement, runtime,
                                  config.precision, config.bf16_tolerance)
            golden = predictor.check_golden()
        except InsideError as error:
            candidates.append({"runtime": runtime, "refused": str(error)})
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


def infer(config: InferConfig) -> dict:
    model_dir = model_directory(config.model)
    choice, golden = None, None
    if config.runtime == RUNTIME_FASTEST:
        predictor, golden, choice = fastest(model_dir, config)
    else:
        predictor = Predictor(model_dir, config.load_op_libraries, config.allow_soft_placement, config.runtime,
                              config.precision, config.bf16_tolerance)
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
    manifests.verify_ahead(model_directory(config.model))  # hashed while TensorFlow imports
    quiet_tensorflow_logs()
    emit_json(infer(replace(config, startup={"interpreter_s": entered})))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
