"""Run a frozen coldchain model on images, after checking it is intact and computes the same numbers here."""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Sequence

from .common import (GoldenMismatch, InsideError, PreflightFailed, atomic_write_text, log, quiet_tensorflow_logs,
                     run_main, sha256_bytes)
from .images import BadImageError, decode_image_file, list_image_files
from .manifest import GOLDEN_FILENAME, MODEL_FILENAME, load_manifest, read_model_bytes
from .preprocess import PreprocessSpec

FORMATS = ("jsonl", "csv")


@dataclass(frozen=True)
class InferConfig:
    model: str
    output: str | None
    inputs: tuple[str, ...]
    format: str = "jsonl"
    top_k: int = 5
    batch_size: int = 16
    golden_only: bool = False
    on_bad_image: str = "fail"
    load_op_libraries: bool = False


def parse_args(argv: Sequence[str] | None) -> InferConfig:
    parser = argparse.ArgumentParser(prog="python -m incontainer.infer", description=__doc__)
    parser.add_argument("--model", required=True, help="model directory (model.pb, manifest.json, golden.npz)")
    parser.add_argument("--output", help="predictions file (JSON lines or CSV)")
    parser.add_argument("--format", choices=FORMATS, default="jsonl")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--golden-only", action="store_true", help="only verify the golden probe")
    parser.add_argument("--on-bad-image", choices=("fail", "skip"), default="fail")
    parser.add_argument("--load-op-libraries", action="store_true",
                        help="load the custom-op libraries shipped in the model's ops/ folder (runs their code)")
    parser.add_argument("inputs", nargs="*", help="image files or directories (recursed, sorted)")
    args = parser.parse_args(argv)
    if not args.golden_only:
        if not args.inputs:
            raise InsideError("no inputs: pass image files or directories (or --golden-only)")
        if not args.output:
            raise InsideError("--output FILE is required unless --golden-only")
    if args.top_k < 1 or args.batch_size < 1:
        raise InsideError("--top-k and --batch-size must be >= 1")
    return InferConfig(model=args.model, output=args.output, inputs=tuple(args.inputs), format=args.format,
                       top_k=args.top_k, batch_size=args.batch_size, golden_only=args.golden_only,
                       on_bad_image=args.on_bad_image, load_op_libraries=args.load_op_libraries)


def load_verified_graph_def(model_dir: str, manifest: dict):
    from .preflight import parse_graph_def

    file_name = str(manifest["model"].get("file", MODEL_FILENAME))
    # The manifest travels with untrusted copies; never let it point outside the model directory.
    if os.path.basename(file_name) != file_name or file_name in ("", ".", ".."):
        raise InsideError(f"manifest model.file {file_name!r} must be a plain file name; re-run freeze")
    path = os.path.join(model_dir, file_name)
    data = read_model_bytes(path, "copy model.pb next to manifest.json")
    actual = sha256_bytes(data)
    expected = manifest["model"]["sha256"]
    if actual != expected:
        try:
            parse_graph_def(data, path)
            state = "it still parses, so it was modified or replaced"
        except InsideError:
            state = "it does not even parse as a GraphDef: corrupt or truncated"
        raise InsideError(f"{path} sha256 {actual[:16]}... does not match manifest {expected[:16]}... "
                          f"({len(data)} bytes, manifest says {manifest['model'].get('size_bytes')}); {state} - "
                          "copy the model directory again or re-run freeze")
    return parse_graph_def(data, path)


def check_interface(graph_def, manifest: dict, path: str) -> tuple[str, str, str]:
    nodes = {node.name: node for node in graph_def.node}
    input_entry = manifest["inputs"][0]
    input_node = nodes.get(input_entry["name"])
    if input_node is None:
        raise InsideError(f"{path} has no input node {input_entry['name']!r} named in the manifest; re-run freeze")
    if input_node.op != "Placeholder":
        raise InsideError(f"{path} node {input_entry['name']!r} is a {input_node.op}, not a Placeholder; re-run freeze")
    if "shape" in input_node.attr and not input_node.attr["shape"].shape.unknown_rank:
        graph_shape = [dim.size if dim.size >= 0 else None for dim in input_node.attr["shape"].shape.dim]
        if graph_shape != list(input_entry["shape"]):
            raise InsideError(f"{path} input {input_entry['name']!r} has shape {graph_shape} but the manifest says "
                              f"{input_entry['shape']}; model and manifest come from different freezes")
    output_names = {entry["name"] for entry in manifest["outputs"]}
    for name in sorted(output_names):
        if name not in nodes:
            raise InsideError(f"{path} has no output node {name!r} named in the manifest; re-run freeze (without "
                              "changing output names)")
    probabilities = "probabilities" if "probabilities" in output_names else None
    if probabilities is None:
        raise InsideError("manifest lists no 'probabilities' output; re-run freeze")
    return f"{input_entry['name']}:0", "logits:0", "probabilities:0"


def load_golden(model_dir: str, manifest: dict) -> dict:
    import numpy as np

    golden = manifest["golden"]
    path = os.path.join(model_dir, golden.get("file", GOLDEN_FILENAME))
    try:
        with open(path, "rb") as handle:
            golden_bytes = handle.read()
    except FileNotFoundError:
        raise InsideError(f"golden probe file not found: {path}; copy golden.npz with the model") from None
    if golden.get("sha256") and sha256_bytes(golden_bytes) != golden["sha256"]:
        raise InsideError(f"{path} does not match the sha256 in the manifest; copy the model directory again")
    try:
        with np.load(io.BytesIO(golden_bytes), allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as error:
        raise InsideError(f"golden probe {path} is unreadable ({error}); copy the model directory again") from None
    missing = [entry["key"] for entry in golden["tensors"] if entry["key"] not in arrays] + \
        ([golden["input_key"]] if golden["input_key"] not in arrays else [])
    if missing:
        raise InsideError(f"golden probe {path} lacks arrays {missing}; copy the model directory again")
    return arrays


def check_golden_preprocessing(manifest: dict, arrays: dict, spec: PreprocessSpec) -> dict | None:
    """This runtime's preprocessing on the golden raw images; None for models frozen before the
    raw probe existed."""
    from .preprocess import check_preprocessing

    probe = manifest["golden"].get("preprocessing_probe")
    if not probe or probe["raw_key"] not in arrays or probe["expected_key"] not in arrays:
        return None
    reference = PreprocessSpec.from_json(manifest["preprocessing"], "manifest.json")
    return check_preprocessing(spec, arrays[probe["raw_key"]], arrays[probe["expected_key"]], probe["abs_tol"],
                               probe["mean_abs_tol"], reference)


def evaluate_golden(session, manifest: dict, arrays: dict, input_tensor: str) -> dict:
    """Run the golden inputs and compare every recorded tensor; never raises on a mismatch."""
    from .golden import compare, top1_agreement

    golden = manifest["golden"]
    entries = golden["tensors"]
    graph = session.graph
    for entry in entries:
        try:
            graph.get_tensor_by_name(entry["name"])
        except (KeyError, ValueError):
            raise InsideError(f"model has no tensor {entry['name']} recorded in the golden probe; model and manifest "
                              "come from different freezes") from None
    start = time.perf_counter()
    values = session.run([entry["name"] for entry in entries], {input_tensor: arrays[golden["input_key"]]})
    seconds = time.perf_counter() - start
    results = [compare(entry["key"], arrays[entry["key"]], value, entry["abs_tol"], entry["rel_tol"])
               for entry, value in zip(entries, values)]
    by_key = {entry["key"]: value for entry, value in zip(entries, values)}
    logits_entry = next(entry for entry in entries if entry["key"] == "logits")
    agreement = top1_agreement(arrays["logits"], by_key["logits"], logits_entry["abs_tol"])
    ok = all(result["ok"] for result in results) and agreement["ok"]
    # Blocks are listed in network order, so the first failing one localises the divergence.
    ordered = sorted(results, key=lambda r: (not r["key"].startswith("block"), r["key"]))
    first = next((result["key"] for result in ordered if not result["ok"]), None)
    bit_exact = all(result.get("max_abs_diff") == 0.0 for result in results)
    return {"ok": ok, "bit_exact": bit_exact, "tensors": results, "top1": agreement, "first_divergence": first,
            "seconds": round(seconds, 4)}


def run_golden(session, model_dir: str, manifest: dict, input_tensor: str, spec: PreprocessSpec) -> dict:
    arrays = load_golden(model_dir, manifest)
    preprocessing = check_golden_preprocessing(manifest, arrays, spec)
    if preprocessing is not None and not preprocessing["ok"]:
        raise GoldenMismatch(preprocessing_message(model_dir, preprocessing))
    summary = evaluate_golden(session, manifest, arrays, input_tensor)
    summary["preprocessing"] = preprocessing
    if not summary["ok"]:
        first = next((r for r in summary["tensors"] if r["key"] == summary["first_divergence"]), None)
        agreement = summary["top1"]
        where = (f"first divergence at {first['key']} (max abs diff {first.get('max_abs_diff', float('nan')):.3g}, "
                 f"{first.get('worst_fraction_of_tolerance', float('nan')):.3g}x tolerance)") if first else \
            f"top-1 disagrees on {agreement['decisive_disagreements']} of {agreement['count']} probes"
        raise GoldenMismatch(f"golden probe of {model_dir} failed on this runtime: {where}; this TF/CPU computes "
                             "different numbers than the freezing environment (compare manifest environment)")
    return summary


def preprocessing_message(model_dir: str, result: dict) -> str:
    fields = result.get("differing_fields") or {}
    named = ", ".join(f"{key} {value['here']} (training: {value['training']})" for key, value in fields.items())
    detail = result.get("reason") or (f"max abs diff {result['max_abs_diff']:.3g} on the [-1, 1] input scale, "
                                      f"tolerance {result['abs_tol']:.3g}")
    cause = f"the preprocessing here differs from training's: {named}" if named else \
        "the same preprocessing spec gives different pixels here (image library version?)"
    return (f"preprocessing mismatch for {model_dir}: {cause}; {detail}; use the manifest's preprocessing "
            "spec unchanged (and the training image's Pillow) - the model itself was not run")


def collect_inputs(inputs: Sequence[str]) -> list[str]:
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


def host_path(path: str) -> str:
    """Name the file as the user knows it: the host mounts inputs at /inputs/N and says, in
    COLDCHAIN_PATH_MAP, which host path each mount point stands for."""
    mapping = json.loads(os.environ.get("COLDCHAIN_PATH_MAP") or "{}")
    for mount, original in sorted(mapping.items(), key=lambda item: -len(item[0])):
        if path == mount or path.startswith(mount.rstrip("/") + "/"):
            return original + path[len(mount):]
    return path


def write_predictions(config: InferConfig, rows: list[dict]) -> None:
    if config.format == "jsonl":
        text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)
    else:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path"] + [f"{kind}_{rank}" for rank in range(1, config.top_k + 1) for kind in ("label", "probability")])
        for row in rows:
            cells = [row["path"]]
            for entry in row["top_k"]:
                cells += [entry["label"], f"{entry['probability']:.6f}"]
            writer.writerow(cells)
        text = buffer.getvalue()
    atomic_write_text(config.output, text)


def infer(config: InferConfig) -> dict:
    model_dir = config.model
    if os.path.isfile(model_dir):
        model_dir = os.path.dirname(model_dir) or "."
    manifest = load_manifest(model_dir)
    spec = PreprocessSpec.from_json(manifest["preprocessing"], os.path.join(model_dir, "manifest.json"))
    labels = manifest["labels"]
    graph_def = load_verified_graph_def(model_dir, manifest)

    from .doctor import DoctorOptions, diagnose
    from .preflight import summarize

    diagnosis = diagnose(DoctorOptions(model=model_dir, load_shipped_op_libraries=config.load_op_libraries,
                                       allow_soft_placement=True))
    findings = diagnosis.findings
    errors = diagnosis.blocking
    if errors:
        raise PreflightFailed(f"{model_dir}/model.pb cannot run on this TensorFlow: {summarize(errors)}")
    input_tensor, _, probabilities_tensor = check_interface(graph_def, manifest, os.path.join(model_dir, MODEL_FILENAME))

    import numpy as np
    import tensorflow as tf

    # TF32 (on by default on Ampere+ GPUs) rounds conv inputs to 10-bit mantissas, far outside the
    # golden tolerances; inference keeps full float32 like the CPU-computed golden reference.
    tf.config.experimental.enable_tensor_float_32_execution(False)
    graph = tf.Graph()
    with graph.as_default():
        try:
            tf.compat.v1.import_graph_def(graph_def, name="")
        except (ValueError, tf.errors.OpError) as error:
            raise PreflightFailed(f"importing {model_dir}/model.pb failed: {str(error).splitlines()[0]}") from None
    threads = manifest.get("inference", {})
    session_config = tf.compat.v1.ConfigProto(allow_soft_placement=True,
                                              intra_op_parallelism_threads=int(threads.get("intra_op_threads", 0)),
                                              inter_op_parallelism_threads=int(threads.get("inter_op_threads", 0)))
    summary: dict = {"model": manifest["model"]["sha256"], "preflight_warnings": [asdict(f) for f in findings]}
    with tf.compat.v1.Session(graph=graph, config=session_config) as session:
        summary["golden"] = run_golden(session, model_dir, manifest, input_tensor, spec)
        log(f"infer: golden probe ok ({summary['golden']['top1']['agree']}/{summary['golden']['top1']['count']} top-1 agree)")
        if config.golden_only:
            return summary
        paths = collect_inputs(config.inputs)
        if not paths:
            raise InsideError("no images found in the given inputs; pass image files or directories holding images")
        top_k = min(config.top_k, len(labels))
        rows, skipped = [], []
        start = time.perf_counter()
        for begin in range(0, len(paths), config.batch_size):
            batch_paths, batch_arrays = [], []
            for path in paths[begin:begin + config.batch_size]:
                try:
                    batch_arrays.append(spec.resize(decode_image_file(path)))
                    batch_paths.append(path)
                except BadImageError as error:
                    if config.on_bad_image == "fail":
                        raise BadImageError(f"{error} (or pass --on-bad-image skip)") from None
                    log(f"infer: skipping: {error}")
                    skipped.append(path)
            if not batch_arrays:
                continue
            probabilities = session.run(probabilities_tensor, {input_tensor: spec.normalize(np.stack(batch_arrays))})
            for path, row in zip(batch_paths, probabilities):
                order = np.argsort(-row, kind="stable")[:top_k]
                rows.append({"path": host_path(path), "top_k": [{"label": labels[i], "probability": round(float(row[i]), 6)}
                                                     for i in order]})
        seconds = time.perf_counter() - start
    write_predictions(config, rows)
    summary["folder_accuracy"] = folder_accuracy(rows, labels)
    summary.update({"images": len(rows), "skipped": skipped, "seconds": round(seconds, 3),
                    "images_per_second": round(len(rows) / max(seconds, 1e-9), 2), "output": config.output})
    return summary


def folder_accuracy(rows: list[dict], labels: Sequence[str]) -> dict | None:
    """Where every image sits in a folder named after a label (the held-out split's layout),
    the frozen graph's own top-1 accuracy; None for unlabelled inputs."""
    known = set(labels)
    truths = [os.path.basename(os.path.dirname(row["path"])) for row in rows]
    if not rows or not all(truth in known for truth in truths):
        return None
    hits = sum(row["top_k"][0]["label"] == truth for row, truth in zip(rows, truths))
    return {"top1": round(hits / len(rows), 4), "images": len(rows)}


def main(argv: Sequence[str] | None = None) -> int | None:
    quiet_tensorflow_logs()
    config = parse_args(argv)
    summary = infer(config)
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
