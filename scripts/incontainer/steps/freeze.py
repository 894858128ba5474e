"""The freeze step: a training run -> model.pb + manifest.json + golden.npz for a TF-only inference
image. Stages: read the run, rebuild the inference network, restore and convert the variables to
constants, transform (devices, folding, stripping), compute the golden probe, write the directory."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Optional, Sequence

from ..common import InsideError, log, quiet_tensorflow_logs, read_json_file, run_main, silence_tensorflow_deprecations
from ..contract import (FLAG_FOLD_BATCH_NORM, FLAG_INPUT_SIZE, FLAG_OUT, FLAG_RUN, FLAG_STRIP_UNUSED, FLAG_THREADS,
                        FLAG_THREADS_MEASURED_ON,
                        GOLDEN_INPUT_KEY, GOLDEN_LOGITS_KEY, GOLDEN_PROBABILITIES_KEY, INPUT_NODE, LABELS_FILE,
                        LOGITS_NODE, MODEL_FILE, MODULES, PROBABILITIES_NODE, RUN_CONFIG_FILE, TOP_K_NODE, tensor_name)
from ..data.labels import read_labels_file
from ..data.preprocess import PreprocessSpec
from ..graph.graphdef import graph_stats
from ..graph.model_directory import Golden, ModelDirectory, golden_inputs, record_golden


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
    pin_device: Optional[str] = None  # build the network under tf.device(...)
    training_mode: bool = False  # build with is_training=True (a classic freezing mistake)
    custom_op_library: Optional[str] = None  # load this library and temperature-scale the logits with its op
    temperature: float = 1.0
    top_k_output: int = 0  # also export a `top_k` node (values, indices) for serving
    top_k_int64: bool = False  # ... with an int64 k (TopKV2's Tk attr, which older TensorFlows lack)
    input_size: int = 0  # export at this square input size instead of the training size (fully convolutional)
    threads: tuple = (0, 0)  # recommended intra-/inter-op threads for inference (0: TF's choice)
    threads_measured_on: Optional[dict] = None  # the machine that measured them (cores, cpu_class, cpu_flags)


@dataclass(frozen=True)
class TrainingRun:
    config: dict
    labels: list
    checkpoint: str
    num_classes: int
    spec: PreprocessSpec
    batch_norm: dict


def parse_args(argv: Optional[Sequence[str]]) -> FreezeConfig:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULES['freeze']}", description=__doc__)
    parser.add_argument(FLAG_RUN, required=True, help="training run directory (config.json, labels.txt, checkpoints)")
    parser.add_argument(FLAG_OUT, required=True, help="model directory to write")
    parser.add_argument("--keep-devices", action="store_true", help="keep device strings (default: cleared)")
    parser.add_argument(FLAG_FOLD_BATCH_NORM, action="store_true", help="fold batch norm into conv weights")
    parser.add_argument(FLAG_STRIP_UNUSED, action="store_true", help="drop nodes not needed for the outputs")
    parser.add_argument("--golden-count", type=int, default=4)
    parser.add_argument("--golden-seed", type=int, default=0)
    parser.add_argument("--pin-device", help="build the network under this device (e.g. /device:GPU:0); "
                                             "kept in the graph only with --keep-devices")
    parser.add_argument("--training-mode", action="store_true",
                        help="freeze the training-mode network (batch statistics): a mistake, for drift tests")
    parser.add_argument("--custom-op-library", help="a compiled op library providing ColdchainTemperatureScale; "
                                                   "the logits are temperature-scaled with it and it ships in ops/")
    parser.add_argument("--temperature", type=float, default=1.0, help="temperature for --custom-op-library")
    parser.add_argument(FLAG_INPUT_SIZE, type=int, default=0,
                        help="export for this input size (e.g. 224) instead of the training size; the network "
                             "is fully convolutional, so the same weights apply")
    parser.add_argument(FLAG_THREADS, default="0,0", metavar="INTRA,INTER",
                        help="inference thread settings to record in the manifest (0 = TF's choice)")
    parser.add_argument(FLAG_THREADS_MEASURED_ON, default=None, metavar="JSON",
                        help="the machine that measured --threads (cores, cpu_class, cpu_flags), recorded beside them")
    parser.add_argument("--top-k-output", type=int, default=0,
                        help="also export top_k:0 (probabilities) and top_k:1 (class ids) for K classes")
    parser.add_argument("--top-k-int64", action="store_true",
                        help="feed top_k an int64 k (a TopKV2 Tk attr that TF before 2.13 does not know)")
    args = parser.parse_args(argv)
    if not 1 <= args.golden_count <= 64:
        raise InsideError(f"--golden-count {args.golden_count}: choose between 1 and 64")
    if args.temperature <= 0:
        raise InsideError(f"--temperature {args.temperature}: must be > 0")
    if args.input_size and not 32 <= args.input_size <= 1024:
        raise InsideError(f"--input-size {args.input_size}: choose between 32 and 1024")
    return FreezeConfig(run=args.run, out=args.out, keep_devices=args.keep_devices, fold_batch_norm=args.fold_batch_norm,
                        strip_unused=args.strip_unused, golden_count=args.golden_count, golden_seed=args.golden_seed,
                        pin_device=args.pin_device, training_mode=args.training_mode,
                        custom_op_library=args.custom_op_library, temperature=args.temperature,
                        top_k_output=args.top_k_output, top_k_int64=args.top_k_int64, input_size=args.input_size,
                        threads=parse_threads(args.threads),
                        threads_measured_on=parse_measured_on(args.threads_measured_on))


def parse_threads(text: str) -> tuple:
    try:
        intra, inter = (int(part) for part in text.split(","))
    except ValueError:
        raise InsideError(f"--threads {text!r}: expected INTRA,INTER, e.g. 2,1 (0 lets TensorFlow choose)") from None
    if intra < 0 or inter < 0:
        raise InsideError(f"--threads {text!r}: thread counts cannot be negative")
    return intra, inter


def parse_measured_on(text: Optional[str]) -> Optional[dict]:
    if text is None:
        return None
    try:
        machine = json.loads(text)
    except ValueError:
        machine = None
    if not isinstance(machine, dict) or not isinstance(machine.get("cores"), int):
        raise InsideError(f"{FLAG_THREADS_MEASURED_ON} {text!r}: expected a JSON object with cores, cpu_class "
                          "and cpu_flags")
    return machine


def remote_job(device: Optional[str]) -> bool:
    return bool(device) and "/job:" in device and "/job:localhost" not in device


def read_run(run_dir: str, input_size: int) -> TrainingRun:
    """Stage 1: the run's config, labels and latest checkpoint, checked against each other."""
    import tensorflow as tf

    fix = "point --run at a directory written by the train step"
    config = read_json_file(os.path.join(run_dir, RUN_CONFIG_FILE), "run config", fix)
    labels = read_labels_file(os.path.join(run_dir, LABELS_FILE))
    checkpoint = tf.train.latest_checkpoint(run_dir)
    if checkpoint is None:
        raise InsideError(f"no checkpoint in {run_dir} (missing 'checkpoint' file or model.ckpt-*.index); {fix}")
    try:
        num_classes = int(config["model"]["num_classes"])
        preprocessing = config["preprocessing"]
        batch_norm = config["model"]["batch_norm"]
    except (KeyError, TypeError, ValueError) as error:
        raise InsideError(f"run config {run_dir}/{RUN_CONFIG_FILE} lacks {error}; {fix}") from None
    if len(labels) != num_classes:
        raise InsideError(f"{run_dir}/{LABELS_FILE} names {len(labels)} classes but {RUN_CONFIG_FILE} says "
                          f"{num_classes}; re-run train")
    spec = PreprocessSpec.from_json(preprocessing, os.path.join(run_dir, RUN_CONFIG_FILE))
    if input_size:
        spec = dataclasses.replace(spec, height=input_size, width=input_size)
    return TrainingRun(config, labels, checkpoint, num_classes, spec, batch_norm)


def build_network(config: FreezeConfig, run: TrainingRun):
    """Stage 2: the inference network (is_training=False unless the defect is asked for), with the
    kit's output names: (graph, saver, nodes to keep, block tensor names)."""
    import tensorflow as tf

    from ..graph.oplibs import load_op_library
    from .resnet import BLOCK_END_POINTS, BatchNormSettings, build_resnet_v1_50

    op_module = load_op_library(config.custom_op_library) if config.custom_op_library else None
    graph = tf.Graph()
    # A device of another job cannot even restore the checkpoint here; transform() writes it in instead.
    local_pin = None if remote_job(config.pin_device) else config.pin_device
    with graph.as_default(), tf.device(local_pin):
        images = tf.compat.v1.placeholder(tf.float32, [None, run.spec.height, run.spec.width, 3], name=INPUT_NODE)
        logits, end_points = build_resnet_v1_50(images, run.num_classes, is_training=config.training_mode,
                                                weight_decay=0.0, batch_norm=BatchNormSettings(**run.batch_norm))
        if op_module is not None:
            logits = op_module.coldchain_temperature_scale(logits, temperature=config.temperature, name=LOGITS_NODE)
        else:
            logits = tf.identity(logits, name=LOGITS_NODE)
        probabilities = tf.nn.softmax(logits, name=PROBABILITIES_NODE)
        if config.top_k_output:
            k = min(config.top_k_output, run.num_classes)
            tf.math.top_k(probabilities, k=tf.constant(k, tf.int64) if config.top_k_int64 else k, name=TOP_K_NODE)
        blocks = {name.rsplit("/", 1)[-1]: end_points[name].name for name in BLOCK_END_POINTS}
        saver = tf.compat.v1.train.Saver()
    keep = [LOGITS_NODE, PROBABILITIES_NODE] + [tensor.split(":")[0] for tensor in blocks.values()] + \
        ([TOP_K_NODE] if config.top_k_output else [])
    return graph, saver, keep, blocks


def convert_variables(config: FreezeConfig, run: TrainingRun, graph, saver, keep: list):
    """Stage 3: restore the checkpoint and turn every variable into a constant."""
    import tensorflow as tf

    # Soft placement: a network pinned to a GPU (--pin-device) must still freeze on a CPU-only host.
    with tf.compat.v1.Session(graph=graph, config=tf.compat.v1.ConfigProto(allow_soft_placement=True)) as session:
        try:
            saver.restore(session, run.checkpoint)
        except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError) as error:
            raise InsideError(f"checkpoint {run.checkpoint} does not match the network in {config.run}/"
                              f"{RUN_CONFIG_FILE} ({error.message.splitlines()[0]}); freeze the run that wrote it") from None
        source = graph.as_graph_def()
        if config.training_mode:
            # The in-place moving-average updates hang off the outputs as control inputs and cannot become
            # constants; drop them, as freezing a graph whose updates live in UPDATE_OPS does.
            for node in source.node:
                kept = [name for name in node.input if not (name.startswith("^") and "AssignMovingAvg" in name)]
                del node.input[:]
                node.input.extend(kept)
        graph_def = tf.compat.v1.graph_util.convert_variables_to_constants(session, source, keep)
    return graph_def, {"training_graph_nodes": len(source.node), "after_convert": graph_stats(graph_def)}


def transform(config: FreezeConfig, graph_def, keep: list, stats: dict):
    """Stage 4: clear devices (unless kept), optionally fold batch norm and strip unused nodes."""
    import tensorflow as tf
    from tensorflow.python.tools import optimize_for_inference_lib, strip_unused_lib

    versions = type(graph_def.versions)()
    versions.CopyFrom(graph_def.versions)
    if not config.keep_devices:
        for node in graph_def.node:
            node.device = ""
    elif remote_job(config.pin_device):
        # What freeze_graph keeps of a graph built under a cluster's device setter.
        for node in graph_def.node:
            node.device = config.pin_device
    if config.fold_batch_norm:
        # The frozen variables are read through Identity nodes; fold_batch_norms wants bare Consts.
        graph_def = tf.compat.v1.graph_util.remove_training_nodes(graph_def, protected_nodes=keep + [INPUT_NODE])
        graph_def = optimize_for_inference_lib.fold_batch_norms(graph_def)
        stats["after_fold_batch_norm"] = graph_stats(graph_def)
    if config.strip_unused:
        graph_def = strip_unused_lib.strip_unused(graph_def, [INPUT_NODE], keep, tf.float32.as_datatype_enum)
        stats["after_strip_unused"] = graph_stats(graph_def)
    # fold_batch_norms/strip_unused build fresh GraphDefs and drop `versions`; a producer of 0 would
    # misstate which TF made the graph, so carry the converter's versions over.
    graph_def.versions.CopyFrom(versions)
    for stage in [key for key in stats if key.startswith("after_")]:
        log(f"freeze: {stage}: {stats[stage]['nodes']} nodes, {stats[stage]['op_types']} op types")
    return graph_def


def compute_golden(graph_def, spec: PreprocessSpec, tensors: dict, count: int, seed: int) -> Golden:
    """Stage 5: the golden probe, computed from the artifact itself (re-imported), on the CPU in
    float32 even in a GPU image: cuDNN/TF32 rounding must not become the reference every CPU host is
    judged against."""
    import tensorflow as tf

    inputs = golden_inputs(spec, seed, count)
    # Computed on this CPU whatever the graph is pinned to: soft placement moves a missing GPU's nodes
    # but cannot place another job's (/job:worker/...), so the golden runs on a copy without devices.
    unpinned = type(graph_def)()
    unpinned.CopyFrom(graph_def)
    for node in unpinned.node:
        node.device = ""
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(unpinned, name="")
    fetched = {key: name for key, name in tensors.items() if key != GOLDEN_INPUT_KEY}
    with tf.compat.v1.Session(graph=graph, config=tf.compat.v1.ConfigProto(device_count={"GPU": 0},
                                                                          allow_soft_placement=True)) as session:
        values = session.run(list(fetched.values()), {tensors[GOLDEN_INPUT_KEY]: inputs.rows})
    return record_golden(spec, seed, inputs, fetched, dict(zip(fetched, values)), count=count)


def write_model_directory(config: FreezeConfig, run: TrainingRun, graph_def, stats: dict, blocks: dict) -> dict:
    """Stage 6: the model directory (graph/model_directory.py): golden.npz, ops/, model.pb, then
    manifest.json last."""
    spec, classes = run.spec, run.num_classes
    tensors = {GOLDEN_INPUT_KEY: tensor_name(INPUT_NODE), GOLDEN_LOGITS_KEY: tensor_name(LOGITS_NODE),
               GOLDEN_PROBABILITIES_KEY: tensor_name(PROBABILITIES_NODE), **blocks}
    golden = compute_golden(graph_def, spec, tensors, config.golden_count, config.golden_seed)
    top_k = min(config.top_k_output, classes)
    transforms = {"devices_cleared": not config.keep_devices, "fold_batch_norm": config.fold_batch_norm,
                  "strip_unused": config.strip_unused}
    if config.pin_device or config.training_mode:
        transforms.update(pin_device=config.pin_device, training_mode=config.training_mode)
    manifest = ModelDirectory(
        out=config.out, model_bytes=graph_def.SerializeToString(deterministic=True), graph_def=graph_def,
        golden=golden, model={"architecture": "resnet_v1_50", "num_classes": classes},
        inputs=[{"name": INPUT_NODE, "tensor": tensor_name(INPUT_NODE), "shape": [None, spec.height, spec.width, 3],
                 "dtype": "float32", "note": "already preprocessed, see preprocessing"}],
        outputs=[
            {"name": LOGITS_NODE, "role": "logits", "tensor": tensor_name(LOGITS_NODE), "shape": [None, classes],
             "dtype": "float32"},
            {"name": PROBABILITIES_NODE, "role": "probabilities", "tensor": tensor_name(PROBABILITIES_NODE),
             "shape": [None, classes], "dtype": "float32"},
        ] + ([{"name": TOP_K_NODE, "role": "top_k", "tensor": tensor_name(TOP_K_NODE), "shape": [None, top_k],
               "dtype": "float32", "indices": tensor_name(TOP_K_NODE, 1)}] if config.top_k_output else []),
        block_outputs=blocks, spec=spec, labels=run.labels, labels_offset=0,
        graph={"node_counts": stats, "transforms": transforms}, origin={"training": training_section(run)},
        threads=config.threads, threads_measured_on=config.threads_measured_on,
        op_libraries=((config.custom_op_library, {"loaded_from": config.custom_op_library}),)
        if config.custom_op_library else ()).write()
    log(f"freeze: wrote {config.out}/{MODEL_FILE} ({manifest['model']['size_bytes']} bytes, sha256 "
        f"{manifest['model']['sha256']})")
    return manifest


def training_section(run: TrainingRun) -> dict:
    """The manifest's account of the training run the model was frozen from."""
    train_section = run.config.get("train", {})
    return {"checkpoint": os.path.basename(run.checkpoint), "batch_norm": run.batch_norm,
            "steps": run.config.get("schedule", {}).get("total_steps"), "seed": train_section.get("seed"),
            "deterministic": train_section.get("numerics") == "deterministic" or bool(train_section.get("deterministic")),
            "numerics": run.config.get("numerics"), "trained_with": run.config.get("trained_with")}


def freeze(config: FreezeConfig) -> dict:
    silence_tensorflow_deprecations()
    run = read_run(config.run, config.input_size)
    graph, saver, keep, blocks = build_network(config, run)
    graph_def, stats = convert_variables(config, run, graph, saver, keep)
    graph_def = transform(config, graph_def, keep, stats)
    refuse_dangerous(graph_def, config.out)
    return write_model_directory(config, run, graph_def, stats, blocks)


def refuse_dangerous(graph_def, out: str) -> None:
    """The kit's own inference graph never reads files, runs Python or talks to the network; a freeze
    that would write such a graph (a changed network, a custom op's wrapper) stops before writing."""
    from ..diagnosis.findings import summarize
    from ..diagnosis.opscan import scan

    found = scan(graph_def)
    if found:
        raise InsideError(f"freeze will not write {out}: the frozen graph holds ops an inference graph never needs: "
                          f"{summarize(found)}", code=found[0].code)


def main(argv: Optional[Sequence[str]] = None) -> Optional[int]:
    quiet_tensorflow_logs()
    freeze(parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
