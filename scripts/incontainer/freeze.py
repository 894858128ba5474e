"""Freeze a training run into model.pb + manifest.json + golden.npz for a TF-only inference image."""
from __future__ import annotations

import argparse
import collections
import dataclasses
import os
from dataclasses import dataclass
from typing import Sequence

from .common import (InsideError, atomic_write_bytes, atomic_write_json, log, quiet_tensorflow_logs,
                     read_json_file, read_labels_file, run_main, silence_tensorflow_deprecations, sha256_bytes, write_deterministic_npz)
from .manifest import (GOLDEN_FILENAME, INPUT_NODE, LOGITS_NODE, MANIFEST_FILENAME, MANIFEST_FORMAT, MODEL_FILENAME,
                       PROBABILITIES_NODE, SCHEMA_VERSION, TOP_K_NODE, environment_fingerprint)


@dataclass(frozen=True)
class FreezeConfig:
    run: str
    out: str
    keep_devices: bool = False
    fold_batch_norm: bool = False
    strip_unused: bool = False
    golden_count: int = 4
    golden_seed: int = 0
    # Deliberate defects and extras, used by the drift test to make realistic broken models:
    pin_device: str | None = None  # build the network under tf.device(...)
    training_mode: bool = False  # build with is_training=True (a classic freezing mistake)
    custom_op_library: str | None = None  # load this library and temperature-scale the logits with its op
    temperature: float = 1.0
    top_k_output: int = 0  # also export a `top_k` node (values, indices) for serving
    input_size: int = 0  # export at this square input size instead of the training size (fully convolutional)
    threads: tuple[int, int] = (0, 0)  # recommended intra-/inter-op threads for inference (0: TF's choice)


def parse_args(argv: Sequence[str] | None) -> FreezeConfig:
    parser = argparse.ArgumentParser(prog="python -m incontainer.freeze", description=__doc__)
    parser.add_argument("--run", required=True, help="training run directory (config.json, labels.txt, checkpoints)")
    parser.add_argument("--out", required=True, help="model directory to write")
    parser.add_argument("--keep-devices", action="store_true", help="keep device strings (default: cleared)")
    parser.add_argument("--fold-batch-norm", action="store_true", help="fold batch norm into conv weights")
    parser.add_argument("--strip-unused", action="store_true", help="drop nodes not needed for the outputs")
    parser.add_argument("--golden-count", type=int, default=4)
    parser.add_argument("--golden-seed", type=int, default=0)
    parser.add_argument("--pin-device", help="build the network under this device (e.g. /device:GPU:0); "
                                             "kept in the graph only with --keep-devices")
    parser.add_argument("--training-mode", action="store_true",
                        help="freeze the training-mode network (batch statistics): a mistake, for drift tests")
    parser.add_argument("--custom-op-library", help="a compiled op library providing ColdchainTemperatureScale; "
                                                   "the logits are temperature-scaled with it and it ships in ops/")
    parser.add_argument("--temperature", type=float, default=1.0, help="temperature for --custom-op-library")
    parser.add_argument("--input-size", type=int, default=0,
                        help="export for this input size (e.g. 224) instead of the training size; the network "
                             "is fully convolutional, so the same weights apply")
    parser.add_argument("--threads", default="0,0", metavar="INTRA,INTER",
                        help="inference thread settings to record in the manifest (make bench measures them; 0 = TF's choice)")
    parser.add_argument("--top-k-output", type=int, default=0,
                        help="also export top_k:0 (probabilities) and top_k:1 (class ids) for K classes")
    args = parser.parse_args(argv)
    if not 1 <= args.golden_count <= 64:
        raise InsideError(f"--golden-count {args.golden_count}: choose between 1 and 64")
    if args.temperature <= 0:
        raise InsideError(f"--temperature {args.temperature}: must be > 0")
    return FreezeConfig(run=args.run, out=args.out, keep_devices=args.keep_devices, fold_batch_norm=args.fold_batch_norm,
                        strip_unused=args.strip_unused, golden_count=args.golden_count, golden_seed=args.golden_seed,
                        pin_device=args.pin_device, training_mode=args.training_mode,
                        custom_op_library=args.custom_op_library, temperature=args.temperature,
                        top_k_output=args.top_k_output, input_size=args.input_size, threads=_threads(args.threads))


def _threads(text: str) -> tuple[int, int]:
    try:
        intra, inter = (int(part) for part in text.split(","))
    except ValueError:
        raise InsideError(f"--threads {text!r}: expected INTRA,INTER, e.g. 2,1 (0 lets TensorFlow choose)") from None
    if intra < 0 or inter < 0:
        raise InsideError(f"--threads {text!r}: thread counts cannot be negative")
    return intra, inter


def op_inventory(graph_def) -> dict:
    """Op type -> attribute names used: what a runtime must understand to import this graph."""
    attrs = collections.defaultdict(set)
    for node in graph_def.node:
        attrs[node.op].update(node.attr.keys())
    for function in graph_def.library.function:
        for node in function.node_def:
            attrs[node.op].update(node.attr.keys())
    return {op: sorted(names) for op, names in sorted(attrs.items())}


def graph_stats(graph_def) -> dict:
    counts = collections.Counter(node.op for node in graph_def.node)
    return {"nodes": len(graph_def.node), "op_types": len(counts), "ops": dict(sorted(counts.items()))}


def load_run(run_dir: str):
    import tensorflow as tf

    fix = "point --run at a directory written by `python -m incontainer.train`"
    config = read_json_file(os.path.join(run_dir, "config.json"), "run config", fix)
    labels = read_labels_file(os.path.join(run_dir, "labels.txt"))
    checkpoint = tf.train.latest_checkpoint(run_dir)
    if checkpoint is None:
        raise InsideError(f"no checkpoint in {run_dir} (missing 'checkpoint' file or model.ckpt-*.index); {fix}")
    try:
        model = config["model"]
        num_classes = int(model["num_classes"])
        preprocessing = config["preprocessing"]
        batch_norm = model["batch_norm"]
    except (KeyError, TypeError, ValueError) as error:
        raise InsideError(f"run config {run_dir}/config.json lacks {error}; {fix}") from None
    if len(labels) != num_classes:
        raise InsideError(f"{run_dir}/labels.txt names {len(labels)} classes but config.json says {num_classes}; re-run train")
    return config, labels, checkpoint, num_classes, preprocessing, batch_norm


def freeze(config: FreezeConfig) -> dict:
    import tensorflow as tf
    from tensorflow.python.tools import optimize_for_inference_lib, strip_unused_lib

    from .golden import BLOCK_ROLE, OUTPUT_ROLE, golden_inputs, tolerance_for
    from .oplibs import describe_library, load_op_library
    from .model import BLOCK_END_POINTS, BatchNormSettings, build_resnet_v1_50
    from .preprocess import PreprocessSpec, preprocessing_probe

    silence_tensorflow_deprecations()
    run_config, labels, checkpoint, num_classes, preprocessing, batch_norm_json = load_run(config.run)
    spec = PreprocessSpec.from_json(preprocessing, os.path.join(config.run, "config.json"))
    if config.input_size:
        if not 32 <= config.input_size <= 1024:
            raise InsideError(f"--input-size {config.input_size}: choose between 32 and 1024")
        spec = dataclasses.replace(spec, height=config.input_size, width=config.input_size)
    batch_norm = BatchNormSettings(**batch_norm_json)

    op_module = load_op_library(config.custom_op_library) if config.custom_op_library else None
    graph = tf.Graph()
    with graph.as_default(), tf.device(config.pin_device):
        images = tf.compat.v1.placeholder(tf.float32, [None, spec.height, spec.width, 3], name=INPUT_NODE)
        logits, end_points = build_resnet_v1_50(images, num_classes, config.training_mode, 0.0, batch_norm)
        if op_module is not None:
            logits = op_module.coldchain_temperature_scale(logits, temperature=config.temperature, name=LOGITS_NODE)
        else:
            logits = tf.identity(logits, name=LOGITS_NODE)
        probabilities = tf.nn.softmax(logits, name=PROBABILITIES_NODE)
        if config.top_k_output:
            tf.math.top_k(probabilities, k=min(config.top_k_output, num_classes), name=TOP_K_NODE)
        block_tensors = {name.rsplit("/", 1)[-1]: end_points[name].name for name in BLOCK_END_POINTS}
        saver = tf.compat.v1.train.Saver()
    block_nodes = [tensor.split(":")[0] for tensor in block_tensors.values()]
    keep_nodes = [LOGITS_NODE, PROBABILITIES_NODE] + block_nodes + ([TOP_K_NODE] if config.top_k_output else [])

    # Soft placement: a network pinned to a GPU (--pin-device) must still freeze on a CPU-only host.
    with tf.compat.v1.Session(graph=graph, config=tf.compat.v1.ConfigProto(allow_soft_placement=True)) as session:
        try:
            saver.restore(session, checkpoint)
        except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError) as error:
            first_line = error.message.splitlines()[0]
            raise InsideError(f"checkpoint {checkpoint} does not match the network in {config.run}/config.json "
                              f"({first_line}); freeze the run that wrote it") from None
        source_graph_def = graph.as_graph_def()
        trained_graph_nodes = len(source_graph_def.node)
        if config.training_mode:
            # The in-place moving-average updates hang off the outputs as control inputs and cannot
            # become constants; drop them, as freezing a graph whose updates live in UPDATE_OPS does.
            for node in source_graph_def.node:
                kept = [name for name in node.input if not (name.startswith("^") and "AssignMovingAvg" in name)]
                del node.input[:]
                node.input.extend(kept)
        graph_def = tf.compat.v1.graph_util.convert_variables_to_constants(
            session, source_graph_def, keep_nodes)

    converted_versions = type(graph_def.versions)()
    converted_versions.CopyFrom(graph_def.versions)
    stats = {"training_graph_nodes": trained_graph_nodes, "after_convert": graph_stats(graph_def)}
    if not config.keep_devices:
        for node in graph_def.node:
            node.device = ""
    if config.fold_batch_norm:
        # The frozen variables are read through Identity nodes; fold_batch_norms wants bare Consts.
        graph_def = tf.compat.v1.graph_util.remove_training_nodes(graph_def, protected_nodes=keep_nodes + [INPUT_NODE])
        graph_def = optimize_for_inference_lib.fold_batch_norms(graph_def)
        stats["after_fold_batch_norm"] = graph_stats(graph_def)
    if config.strip_unused:
        graph_def = strip_unused_lib.strip_unused(graph_def, [INPUT_NODE], keep_nodes, tf.float32.as_datatype_enum)
        stats["after_strip_unused"] = graph_stats(graph_def)
    # fold_batch_norms/strip_unused build fresh GraphDefs and drop `versions`; a producer of 0 would
    # misstate which TF made the graph, so carry the converter's versions over.
    graph_def.versions.CopyFrom(converted_versions)
    for stage in [key for key in stats if key.startswith("after_")]:
        log(f"freeze: {stage}: {stats[stage]['nodes']} nodes, {stats[stage]['op_types']} op types")

    model_bytes = graph_def.SerializeToString(deterministic=True)
    tensor_names = {"input": f"{INPUT_NODE}:0", "logits": f"{LOGITS_NODE}:0", "probabilities": f"{PROBABILITIES_NODE}:0",
                    **block_tensors}

    # Golden values come from the artifact itself (re-imported), not the training-side graph.
    probe = golden_inputs(config.golden_seed, config.golden_count, spec.height, spec.width)
    probe_graph = tf.Graph()
    with probe_graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    output_keys = ["logits", "probabilities"] + list(block_tensors)
    # Golden values are computed on CPU in float32 even in a GPU training image: cuDNN/TF32 results
    # would bake GPU-specific rounding into the reference every CPU inference host is judged against.
    cpu_only = tf.compat.v1.ConfigProto(device_count={"GPU": 0}, allow_soft_placement=True)
    with tf.compat.v1.Session(graph=probe_graph, config=cpu_only) as session:
        values = session.run([tensor_names[key] for key in output_keys], {tensor_names["input"]: probe})
    golden_arrays = {"input": probe, **dict(zip(output_keys, values))}
    # Raw images and what the training-side preprocessing makes of them: inference re-runs its own
    # preprocessing on these and must land on the same tensor.
    raw_images, raw_preprocessed = preprocessing_probe(spec, config.golden_seed)
    golden_arrays.update(raw_images=raw_images, raw_preprocessed=raw_preprocessed)
    golden_entries = []
    for key in output_keys:
        abs_tol, rel_tol = tolerance_for(key, golden_arrays[key])
        golden_entries.append({
            "key": key, "name": tensor_names[key], "shape": list(golden_arrays[key].shape), "dtype": "float32",
            "abs_tol": abs_tol, "rel_tol": rel_tol, "role": OUTPUT_ROLE if key in ("logits", "probabilities") else BLOCK_ROLE,
        })

    os.makedirs(config.out, exist_ok=True)
    write_deterministic_npz(os.path.join(config.out, GOLDEN_FILENAME), golden_arrays)
    with open(os.path.join(config.out, GOLDEN_FILENAME), "rb") as handle:
        golden_sha = sha256_bytes(handle.read())

    train_section = run_config.get("train", {})
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "format": MANIFEST_FORMAT,
        "model": {
            "file": MODEL_FILENAME, "sha256": sha256_bytes(model_bytes), "size_bytes": len(model_bytes),
            "architecture": "resnet_v1_50", "num_classes": num_classes,
        },
        "inputs": [{"name": INPUT_NODE, "tensor": f"{INPUT_NODE}:0", "shape": [None, spec.height, spec.width, 3],
                    "dtype": "float32", "note": "already preprocessed, see preprocessing"}],
        "outputs": [
            {"name": LOGITS_NODE, "tensor": f"{LOGITS_NODE}:0", "shape": [None, num_classes], "dtype": "float32"},
            {"name": PROBABILITIES_NODE, "tensor": f"{PROBABILITIES_NODE}:0", "shape": [None, num_classes], "dtype": "float32"},
        ] + ([{"name": TOP_K_NODE, "tensor": f"{TOP_K_NODE}:0", "shape": [None, min(config.top_k_output, num_classes)],
               "dtype": "float32", "indices": f"{TOP_K_NODE}:1"}] if config.top_k_output else []),
        "block_outputs": block_tensors,
        "preprocessing": spec.to_json(),
        "labels": list(labels),
        "graph": {
            "producer": graph_def.versions.producer,
            "min_consumer": graph_def.versions.min_consumer,
            "op_inventory": op_inventory(graph_def),
            "node_counts": stats,
            "transforms": {"devices_cleared": not config.keep_devices, "fold_batch_norm": config.fold_batch_norm,
                           "strip_unused": config.strip_unused},
        },
        "golden": {
            "file": GOLDEN_FILENAME, "sha256": golden_sha, "seed": config.golden_seed, "count": config.golden_count,
            "input_key": "input", "tensors": golden_entries, "computed_on": "CPU",
            "preprocessing_probe": {"raw_key": "raw_images", "expected_key": "raw_preprocessed",
                                    # One uint8 level is resampling round-off (Pillow releases differ there);
                                    # a different spec moves most pixels by many levels.
                                    "abs_tol": 2.0 / min(spec.std), "mean_abs_tol": 0.5 / min(spec.std)},
        },
        "training": {
            "checkpoint": os.path.basename(checkpoint),
            "batch_norm": batch_norm_json,
            "steps": run_config.get("schedule", {}).get("total_steps"),
            "seed": train_section.get("seed"),
            "deterministic": train_section.get("deterministic"),
            "trained_with": run_config.get("trained_with"),
        },
        "environment": environment_fingerprint(),
        "custom_ops": [],
        "inference": {"intra_op_threads": config.threads[0], "inter_op_threads": config.threads[1]},
    }
    if config.custom_op_library:
        with open(config.custom_op_library, "rb") as handle:
            library_bytes = handle.read()
        shipped = f"ops/{os.path.basename(config.custom_op_library)}"
        atomic_write_bytes(os.path.join(config.out, shipped), library_bytes)
        manifest["custom_ops"].append({"library": shipped, **describe_library(library_bytes),
                                       "loaded_from": config.custom_op_library})
    if config.pin_device or config.training_mode:
        manifest["graph"]["transforms"].update(pin_device=config.pin_device, training_mode=config.training_mode)
    # model.pb last-but-one and manifest last: a reader that sees the manifest sees a complete set.
    atomic_write_bytes(os.path.join(config.out, MODEL_FILENAME), model_bytes)
    atomic_write_json(os.path.join(config.out, MANIFEST_FILENAME), manifest)
    log(f"freeze: wrote {config.out}/{MODEL_FILENAME} ({len(model_bytes)} bytes, sha256 {manifest['model']['sha256'][:12]}...)")
    return manifest


def main(argv: Sequence[str] | None = None) -> int | None:
    quiet_tensorflow_logs()
    freeze(parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
