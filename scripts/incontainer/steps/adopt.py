"""The adopt step: turn a frozen graph made outside coldchain (slim's export_inference_graph.py, then
TensorFlow's freeze_graph) into a coldchain model directory, in the reference environment this
container is. The model's bytes are copied unchanged; the manifest and the golden outputs (block
outputs too, where slim's end-point names exist) are computed here, and say so.

Finds the input placeholder and the output candidates from the graph itself (slim's names first),
reads the image size and batch limit from the placeholder, takes the preprocessing as a preset or as
fields, and checks the labels against the graph's class count.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np

from ..common import (InsideError, atomic_write_bytes, atomic_write_json, log, quiet_tensorflow_logs, run_main,
                      sha256_bytes, write_deterministic_npz)
from ..contract import (ENVIRONMENT_DIR, FLAG_ALLOW_SOFT_PLACEMENT, GOLDEN_FILE, GOLDEN_INPUT_KEY, GOLDEN_LOGITS_KEY,
                        GOLDEN_PROBABILITIES_KEY, GOLDEN_RAW_KEY, GOLDEN_RAW_PREPROCESSED_KEY, MANIFEST_FILE,
                        MANIFEST_FORMAT, MANIFEST_SCHEMA_VERSION, MODEL_FILE, MODULES, OPS_DIR, tensor_name,
                        FLAG_ENVIRONMENT, FLAG_ENVIRONMENT_NAME, FLAG_IMAGES, FLAG_IMAGE_SIZE, FLAG_INPUT,
                        FLAG_LABELS, FLAG_LABELS_OFFSET, FLAG_LOGITS, FLAG_MODEL, FLAG_OP_LIBRARY, FLAG_OUT,
                        FLAG_OUTPUT, FLAG_PREPROCESSING, FLAG_PREPROCESSING_FIELD, FLAG_REFERENCE)
from ..data.preprocess import PRESETS, PreprocessSpec, preset_spec, with_fields

# slim's output names, most specific first (export_inference_graph.py + freeze_graph).
SLIM_PROBABILITIES = (r"(^|/)predictions/Reshape_1$", r"(^|/)predictions/Softmax$", r"(^|/)Softmax$")
SLIM_LOGITS = (r"(^|/)SpatialSqueeze$", r"(^|/)logits/BiasAdd$", r"(^|/)logits/Squeeze$")
SLIM_BLOCK = re.compile(r"^(?P<scope>.*/)?block(?P<block>\d+)/unit_(?P<unit>\d+)/bottleneck_v(?P<version>[12])/"
                        r"(?P<op>Relu|add)$")
MAX_USER_IMAGES = 8
SLIM_IMAGENET_CLASSES = 1001
TEXT_MODEL_FILE = "model.pbtxt"


@dataclass(frozen=True)
class AdoptConfig:
    model: str
    out: str
    input: Optional[str] = None
    output: Optional[str] = None
    logits: Optional[str] = None
    preprocessing: str = "vgg"
    preprocessing_fields: tuple = ()
    image_size: int = 0
    labels: Optional[str] = None
    labels_offset: Optional[int] = None
    images: Optional[str] = None
    golden_count: int = 4
    golden_seed: int = 0
    op_libraries: tuple = ()
    allow_soft_placement: bool = True
    reference: str = ""  # how the host describes this environment (requirements, image, matrix env)
    environment: Optional[str] = None  # the resolved reference environment (lock + source) to ship with the model
    environment_name: str = "reference"


def parse_args(argv: Optional[Sequence[str]]) -> AdoptConfig:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULES['adopt']}", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(FLAG_MODEL, required=True, help="the frozen graph (binary .pb or text .pbtxt)")
    parser.add_argument(FLAG_OUT, required=True, help="model directory to write")
    parser.add_argument(FLAG_INPUT, help="the input placeholder (default: the graph's only placeholder)")
    parser.add_argument(FLAG_OUTPUT, help="the probabilities output (default: slim's predictions node)")
    parser.add_argument(FLAG_LOGITS, help="the logits output (default: slim's SpatialSqueeze or logits/BiasAdd)")
    parser.add_argument(FLAG_PREPROCESSING, default="vgg", help=f"a preset ({', '.join(PRESETS)}); default vgg, "
                                                               "what slim uses for resnet_v1")
    parser.add_argument(FLAG_PREPROCESSING_FIELD, action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument(FLAG_IMAGE_SIZE, type=int, default=0, help="where the placeholder leaves height/width open")
    parser.add_argument(FLAG_LABELS, help="labels file: one name per line, or slim's id:name lines")
    parser.add_argument(FLAG_LABELS_OFFSET, type=int, default=None,
                        help="1 when class 0 is slim's background; default: 1 for slim's 1001 classes with 1000 names")
    parser.add_argument(FLAG_IMAGES, help="a directory of your own images to add to the golden probe")
    parser.add_argument("--golden-count", type=int, default=4)
    parser.add_argument("--golden-seed", type=int, default=0)
    parser.add_argument(FLAG_OP_LIBRARY, action="append", default=[], help="a custom-op library the graph needs")
    parser.add_argument("--no-soft-placement", dest="allow_soft_placement", action="store_false",
                        help="compute the golden with the graph's device pins enforced")
    parser.add_argument(FLAG_ALLOW_SOFT_PLACEMENT, dest="allow_soft_placement", action="store_true",
                        help=argparse.SUPPRESS)
    parser.add_argument(FLAG_REFERENCE, default="", help=argparse.SUPPRESS)
    parser.add_argument(FLAG_ENVIRONMENT, default=None,
                        help="a directory holding the reference environment's lock; copied into the model")
    parser.add_argument(FLAG_ENVIRONMENT_NAME, default="reference", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 1 <= args.golden_count <= 64:
        raise InsideError(f"--golden-count {args.golden_count}: choose between 1 and 64")
    return AdoptConfig(model=args.model, out=args.out, input=args.input, output=args.output, logits=args.logits,
                       preprocessing=args.preprocessing, preprocessing_fields=tuple(args.preprocessing_field),
                       image_size=args.image_size, labels=args.labels, labels_offset=args.labels_offset,
                       images=args.images, golden_count=args.golden_count, golden_seed=args.golden_seed,
                       op_libraries=tuple(args.op_library), allow_soft_placement=args.allow_soft_placement,
                       reference=args.reference, environment=args.environment,
                       environment_name=args.environment_name)


def choose_input(graph_def, wanted: Optional[str], path: str):
    from ..graph.graphdef import placeholders

    found = placeholders(graph_def)
    if wanted:
        wanted = wanted.split(":")[0]
        node = next((node for node in graph_def.node if node.name == wanted), None)
        if node is None or node.op not in ("Placeholder", "PlaceholderV2"):
            names = [p.name for p in found]
            raise InsideError(f"--input {wanted!r} is not a placeholder of {path}; its placeholders: {names or 'none'}")
        return node
    if not found:
        raise InsideError(f"{path} has no placeholder to feed images into: it is not an inference graph (export it "
                          "with slim's export_inference_graph.py, which adds the 'input' placeholder)")
    if len(found) > 1:
        raise InsideError(f"{path} has {len(found)} placeholders ({', '.join(p.name for p in found)}); name the image "
                          "input with --input NAME")
    return found[0]


def _match(names: Sequence[str], patterns: Sequence[str]) -> Optional[str]:
    for pattern in patterns:
        hits = sorted(name for name in names if re.search(pattern, name))
        if hits:
            return min(hits, key=len)
    return None


def choose_outputs(graph_def, config: AdoptConfig, path: str) -> Dict[str, str]:
    """{role: node}: slim's names recognised, the user's names checked, the real sinks suggested."""
    from ..graph.graphdef import sinks

    names = {node.name for node in graph_def.node}
    outputs = sinks(graph_def)
    chosen: Dict[str, str] = {}
    for role, wanted in (("probabilities", config.output), ("logits", config.logits)):
        if wanted is not None:
            if wanted.split(":")[0] not in names:
                raise InsideError(f"--{'output' if role == 'probabilities' else 'logits'} {wanted!r} is not a node "
                                  f"of {path}; the nodes nothing consumes (its likely outputs) are: {outputs[:8]}")
            chosen[role] = wanted.split(":")[0]
    if "probabilities" not in chosen:
        found = _match(list(names), SLIM_PROBABILITIES)
        if found:
            chosen["probabilities"] = found
    if "logits" not in chosen:
        found = _match(list(names), SLIM_LOGITS)
        if found:
            chosen["logits"] = found
    if not chosen:
        raise InsideError(f"{path} has none of slim's output names (predictions/Reshape_1, SpatialSqueeze, "
                          f"logits/BiasAdd); name them with --output / --logits; the graph's sinks are {outputs[:8]}")
    return chosen


def block_outputs(graph_def) -> Dict[str, str]:
    """slim's block end points: the last unit's output of each block (block1 ... block4)."""
    last: Dict[int, tuple] = {}
    for node in graph_def.node:
        match = SLIM_BLOCK.match(node.name)
        if match and (match.group("version") == "1") == (match.group("op") == "Relu"):
            block, unit = int(match.group("block")), int(match.group("unit"))
            if block not in last or unit > last[block][0]:
                last[block] = (unit, node.name)
    return {f"block{block}": tensor_name(name) for block, (unit, name) in sorted(last.items())}


def read_user_images(directory: Optional[str], spec: PreprocessSpec) -> tuple:
    """(preprocessed images, their file names) from the user's own images, in a stable order."""
    if not directory:
        return np.zeros((0, spec.height, spec.width, 3), np.float32), []
    from ..data.image_files import decode_image_file, for_spec, list_image_files

    paths = list_image_files(directory)[:MAX_USER_IMAGES]
    if not paths:
        raise InsideError(f"--images {directory} holds no image files (PNG, JPEG, ...)")
    arrays = [spec.apply(decode_image_file(path, **for_spec(spec))) for path in paths]
    return np.stack(arrays).astype(np.float32), [os.path.basename(path) for path in paths]


def run_batches(session, fetches: Dict[str, str], input_tensor: str, inputs: np.ndarray, limit: Optional[int]):
    from ..golden.check import in_batches, session_runner

    return in_batches(session_runner(session, fetches, input_tensor), inputs, limit)


def adopt(config: AdoptConfig) -> dict:
    import tensorflow as tf

    from ..data.labels import read_labels_file
    from ..data.preprocess import preprocessing_probe, tolerances
    from ..diagnosis.doctor import DoctorOptions, diagnose
    from ..diagnosis.findings import group, summarize
    from ..golden import encoded
    from ..golden.compare import BLOCK_ROLE, OUTPUT_ROLE, golden_inputs_for, tolerance_for
    from ..graph.graphdef import graph_stats, is_text_format, op_inventory, placeholder_shape, read_model_bytes
    from ..graph.manifest import GOLDEN_SPEC_KEY, encode_spec
    from ..graph.oplibs import describe_library
    from ..runtime import describe, effective_numerics, image_identity

    path = config.model
    data = read_model_bytes(path, "pass the frozen graph file (e.g. frozen_resnet_v1_50.pb)")
    diagnosis = diagnose(DoctorOptions(model=path, op_libraries=config.op_libraries,
                                       allow_soft_placement=config.allow_soft_placement, run=False))
    if diagnosis.blocking:
        raise InsideError(f"{path} cannot be adopted in this environment (TensorFlow {tf.__version__}): "
                          f"{summarize(group(diagnosis.blocking))}; adopt it in the environment that froze it "
                          "(--requirements FILE or --reference-image TAG)", code=diagnosis.outcome)
    graph_def, graph = diagnosis.graph_def, diagnosis.graph
    node = choose_input(graph_def, config.input, path)
    shape = placeholder_shape(node) or [None, None, None, 3]
    if len(shape) != 4:
        raise InsideError(f"input {node.name!r} of {path} has shape {shape}; an image model takes [batch, height, "
                          "width, 3]; name the image input with --input")
    height, width = shape[1] or config.image_size, shape[2] or config.image_size
    if not height or not width:
        raise InsideError(f"input {node.name!r} of {path} leaves the image size open ({shape}); pass --image-size N")
    if config.image_size and (shape[1], shape[2]) not in ((None, None), (config.image_size, config.image_size)):
        raise InsideError(f"--image-size {config.image_size} contradicts the placeholder's {shape[1]}x{shape[2]}")
    limit = shape[0]
    spec = with_fields(preset_spec(config.preprocessing, height, width), config.preprocessing_fields,
                       FLAG_PREPROCESSING_FIELD)
    outputs = choose_outputs(graph_def, config, path)
    blocks = block_outputs(graph_def)
    tensors = {role: tensor_name(name) for role, name in outputs.items()}
    input_tensor = tensor_name(node.name)

    synthetic = golden_inputs_for(spec, config.golden_seed, config.golden_count)
    own, own_names = read_user_images(config.images, spec)
    # Encoded JPEG/PNG goldens go through the decoder too: their rows follow the others.
    encoded_arrays, encoded_rows, encoded_section = encoded.make(spec, config.golden_seed,
                                                                 first_row=len(synthetic) + len(own))
    probe = np.concatenate([synthetic, own, encoded_rows]) if len(own) else np.concatenate([synthetic, encoded_rows])
    fetch = {**{GOLDEN_LOGITS_KEY if role == "logits" else GOLDEN_PROBABILITIES_KEY: tensor
                for role, tensor in tensors.items()}, **blocks}
    session_config = tf.compat.v1.ConfigProto(allow_soft_placement=config.allow_soft_placement,
                                              device_count={"GPU": 0})
    with tf.compat.v1.Session(graph=graph, config=session_config) as session:
        try:
            values = run_batches(session, fetch, input_tensor, probe, limit)
        except tf.errors.OpError as error:
            raise InsideError(f"running {path} here failed: {str(error).splitlines()[0][:300]}; check --input/--output,"
                              " or adopt it in the environment that froze it") from None
    check_probabilities(values, config, outputs)
    classes = int(next(values[key] for key in (GOLDEN_PROBABILITIES_KEY, GOLDEN_LOGITS_KEY) if key in values).shape[-1])
    labels, offset = choose_labels(config, classes, read_labels_file)
    numerics = effective_numerics(0, 0, device="cpu")

    arrays = {GOLDEN_INPUT_KEY: probe.astype(np.float32), **{key: np.asarray(value, np.float32)
                                                             for key, value in values.items()}}
    raw_images, raw_preprocessed = preprocessing_probe(spec, config.golden_seed)
    arrays.update({GOLDEN_RAW_KEY: raw_images, GOLDEN_RAW_PREPROCESSED_KEY: raw_preprocessed,
                   GOLDEN_SPEC_KEY: encode_spec(spec.to_json()), **encoded_arrays})
    entries = []
    for key, name in fetch.items():
        abs_tol, rel_tol = tolerance_for(key, arrays[key])
        entries.append({"key": key, "name": name, "shape": list(arrays[key].shape), "dtype": "float32",
                        "abs_tol": abs_tol, "rel_tol": rel_tol,
                        "role": OUTPUT_ROLE if key in (GOLDEN_LOGITS_KEY, GOLDEN_PROBABILITIES_KEY) else BLOCK_ROLE})

    text = is_text_format(data)
    model_file = TEXT_MODEL_FILE if text else MODEL_FILE
    os.makedirs(config.out, exist_ok=True)
    write_deterministic_npz(os.path.join(config.out, GOLDEN_FILE), arrays)
    with open(os.path.join(config.out, GOLDEN_FILE), "rb") as handle:
        golden_sha = sha256_bytes(handle.read())
    environment = ship_environment(config)
    custom_ops = []
    for library in config.op_libraries:
        with open(library, "rb") as handle:
            library_bytes = handle.read()
        shipped = f"{OPS_DIR}/{os.path.basename(library)}"
        atomic_write_bytes(os.path.join(config.out, shipped), library_bytes)
        custom_ops.append({"library": shipped, **describe_library(library_bytes)})
    manifest = {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "format": MANIFEST_FORMAT,
        "model": {"file": model_file, "sha256": sha256_bytes(data), "size_bytes": len(data),
                  "architecture": _architecture(graph_def), "num_classes": classes,
                  "encoding": "text" if text else "binary"},
        "inputs": [{"name": node.name, "tensor": input_tensor, "shape": [limit, height, width, 3],
                    "dtype": "float32", "note": "preprocessed as the preprocessing section says"}],
        "outputs": [{"name": name, "role": role, "tensor": tensors[role], "shape": [limit, classes], "dtype": "float32"}
                    for role, name in sorted(outputs.items())],
        "block_outputs": blocks,
        "preprocessing": spec.to_json(),
        "labels": labels,
        "labels_offset": offset,
        "graph": {"producer": graph_def.versions.producer, "min_consumer": graph_def.versions.min_consumer,
                  "op_inventory": op_inventory(graph_def), "node_counts": {"adopted": graph_stats(graph_def)},
                  "devices": sorted({n.device for n in graph_def.node if n.device})},
        "golden": {"file": GOLDEN_FILE, "sha256": golden_sha, "seed": config.golden_seed, "count": len(probe),
                   "own_images": own_names, "input_key": GOLDEN_INPUT_KEY, "tensors": entries, "computed_on": "CPU",
                   "numerics": numerics, "preprocessing_probe": {"raw_key": GOLDEN_RAW_KEY,
                                                                 "expected_key": GOLDEN_RAW_PREPROCESSED_KEY,
                                                                 **tolerances(spec)},
                   "encoded": encoded_section},
        "adopted": {"source_file": os.path.basename(path), "source_sha256": sha256_bytes(data),
                    "reference": config.reference or "the environment adopt ran in",
                    "golden_from": f"computed by adopt in the reference environment (TensorFlow {tf.__version__}, "
                                   f"soft placement {'on' if config.allow_soft_placement else 'off'})",
                    "findings": [finding.to_json() for finding in group(diagnosis.findings)],
                    "environment": environment},
        "environment": {**describe(), "host": image_identity()},
        "custom_ops": custom_ops,
        "inference": {"intra_op_threads": 0, "inter_op_threads": 0},
    }
    from ..golden.budget import record_budget

    record_budget(manifest, graph_def, arrays)  # golden.precision_budget: what bf16 alone does to this model
    # The model exactly as given; the manifest last, so a reader that sees it sees a complete set.
    atomic_write_bytes(os.path.join(config.out, model_file), data)
    atomic_write_json(os.path.join(config.out, MANIFEST_FILE), manifest)
    log(f"adopt: {os.path.basename(path)} -> {config.out}: input {node.name} {shape}, outputs "
        f"{', '.join(f'{role} {name}' for role, name in sorted(outputs.items()))}, {classes} classes, "
        f"{len(blocks)} block outputs, {spec.preset} preprocessing, golden of {len(probe)} images")
    return manifest


def ship_environment(config: AdoptConfig) -> Optional[dict]:
    """The reference environment's lock (and its source) travel with the model, so a drift test can
    build the environment the golden came from again."""
    if not config.environment:
        return None
    import tensorflow as tf

    shipped = {}
    for name in sorted(os.listdir(config.environment)):
        source = os.path.join(config.environment, name)
        if os.path.isfile(source) and not name.startswith("."):
            with open(source, "rb") as handle:
                atomic_write_bytes(os.path.join(config.out, ENVIRONMENT_DIR, name), handle.read())
            shipped[name] = f"{ENVIRONMENT_DIR}/{name}"
    return {"name": config.environment_name, "files": shipped, "python": platform.python_version(),
            "tensorflow": tf.__version__}


def check_probabilities(values: dict, config: AdoptConfig, outputs: Dict[str, str]) -> None:
    """An output taken as probabilities must give them: non-negative rows that sum to one."""
    if GOLDEN_PROBABILITIES_KEY not in values:
        return
    rows = np.asarray(values[GOLDEN_PROBABILITIES_KEY], dtype=np.float64).reshape(len(values[GOLDEN_PROBABILITIES_KEY]), -1)
    if rows.min() < -1e-6 or np.max(np.abs(rows.sum(axis=1) - 1.0)) > 1e-3:
        flag = FLAG_OUTPUT if config.output else "the recognised output"
        raise InsideError(f"{flag} {outputs['probabilities']!r} does not give probabilities (its rows do not sum to 1); "
                          "pass it as --logits NAME instead (infer then applies softmax)")


def choose_labels(config: AdoptConfig, classes: int, read_labels_file) -> tuple:
    if config.labels is None:
        log(f"adopt: no --labels: naming the {classes} classes class_0 ... class_{classes - 1}")
        return [f"class_{index}" for index in range(classes)], 0
    labels = read_labels_file(config.labels)
    offset = config.labels_offset
    if offset is None:
        # Only slim's ImageNet convention is assumed: 1001 outputs, 1000 names, class 0 the background.
        offset = 1 if (classes, len(labels)) == (SLIM_IMAGENET_CLASSES, SLIM_IMAGENET_CLASSES - 1) else 0
        if offset:
            log(f"adopt: {config.labels} names 1000 classes for a graph with 1001: labels_offset 1 (class 0 is "
                "slim's background class)")
    if offset not in (0, 1) or len(labels) + offset != classes:
        hint = " (if class 0 is a background class, pass --labels-offset 1)" if len(labels) + 1 == classes else ""
        raise InsideError(f"labels file {config.labels} names {len(labels)} classes (labels_offset {offset}), but the "
                          f"graph has {classes}; pass the labels file the model was trained with{hint}")
    return labels, offset


def _architecture(graph_def) -> str:
    scopes = {node.name.split("/", 1)[0] for node in graph_def.node if "/" in node.name}
    for name in ("resnet_v1_50", "resnet_v1_101", "resnet_v1_152", "resnet_v2_50", "inception_v3", "mobilenet_v1"):
        if name in scopes:
            return name
    return "unknown"


def main(argv: Optional[Sequence[str]] = None) -> Optional[int]:
    quiet_tensorflow_logs()
    config = parse_args(argv)
    if os.path.isdir(config.model):
        raise InsideError(f"{config.model} is a directory; pass the frozen graph file itself")
    adopt(config)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
