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
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from ..common import InsideError, atomic_write_bytes, log, quiet_tensorflow_logs, run_main, sha256_bytes
from ..contract import (ENVIRONMENT_DIR, FLAG_ALLOW_OP, FLAG_ALLOW_SOFT_PLACEMENT, FLAG_ENVIRONMENT,
                        FLAG_ENVIRONMENT_NAME, FLAG_IMAGES, FLAG_IMAGE_SIZE, FLAG_INPUT, FLAG_LABELS,
                        FLAG_LABELS_OFFSET, FLAG_LOGITS, FLAG_MODEL, FLAG_OP_LIBRARY, FLAG_OUT, FLAG_OUTPUT,
                        FLAG_PREPROCESSING, FLAG_PREPROCESSING_FIELD, FLAG_REFERENCE, GOLDEN_INPUT_KEY,
                        GOLDEN_LOGITS_KEY, GOLDEN_PROBABILITIES_KEY, MODEL_FILE, MODULES, tensor_name)
from ..data.preprocess import PRESETS, PreprocessSpec, preset_spec, with_fields
from ..graph.model_directory import Golden, ModelDirectory, golden_inputs, record_golden

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
    allowed_ops: tuple = ()  # --allow-op: ops the graph scan lets through (recorded in origin.adopted)


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
    parser.add_argument(FLAG_ALLOW_OP, dest="allow_op", action="append", default=[], metavar="OP",
                        help="let this op through the graph scan (repeatable; recorded in the manifest)")
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
                       environment_name=args.environment_name, allowed_ops=tuple(args.allow_op))


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


@dataclass(frozen=True)
class Interface:
    """What adopt reads off the graph: the image input (its size and batch limit), the preprocessing
    for that size, the outputs by role and slim's block end points."""
    node: Any  # the input placeholder's NodeDef
    shape: list  # as the placeholder declares it
    height: int  # the placeholder's, or --image-size where it leaves them open
    width: int
    spec: PreprocessSpec
    outputs: Dict[str, str]  # role -> node
    blocks: Dict[str, str]  # block -> tensor

    @property
    def limit(self) -> Optional[int]:
        """A batch size fixed in the graph (older exports wrote 1), else None."""
        return self.shape[0]

    @property
    def input_tensor(self) -> str:
        return tensor_name(self.node.name)

    @property
    def tensors(self) -> Dict[str, str]:
        """role -> tensor."""
        return {role: tensor_name(name) for role, name in self.outputs.items()}

    @property
    def fetched(self) -> Dict[str, str]:
        """golden key -> tensor: the outputs, then the blocks."""
        return {**{GOLDEN_LOGITS_KEY if role == "logits" else GOLDEN_PROBABILITIES_KEY: tensor
                   for role, tensor in self.tensors.items()}, **self.blocks}


def read_interface(config: AdoptConfig, graph_def, path: str) -> Interface:
    from ..graph.graphdef import placeholder_shape

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
    spec = with_fields(preset_spec(config.preprocessing, height, width), config.preprocessing_fields,
                       FLAG_PREPROCESSING_FIELD)
    return Interface(node, shape, height, width, spec, choose_outputs(graph_def, config, path), block_outputs(graph_def))


def compute_golden(config: AdoptConfig, graph, interface: Interface, path: str) -> Tuple[Golden, int]:
    """The golden probe (the user's own images among its inputs) through the graph as given, on this
    CPU, with soft placement as asked; and the number of classes its outputs have."""
    import tensorflow as tf

    spec = interface.spec
    own, own_names = read_user_images(config.images, spec)
    inputs = golden_inputs(spec, config.golden_seed, config.golden_count, own)
    session_config = tf.compat.v1.ConfigProto(allow_soft_placement=config.allow_soft_placement,
                                              device_count={"GPU": 0})
    with tf.compat.v1.Session(graph=graph, config=session_config) as session:
        try:
            values = run_batches(session, interface.fetched, interface.input_tensor, inputs.rows, interface.limit)
        except tf.errors.OpError as error:
            raise InsideError(f"running {path} here failed: {str(error).splitlines()[0][:300]}; check --input/--output,"
                              " or adopt it in the environment that froze it") from None
    check_probabilities(values, config, interface.outputs)
    classes = int(next(values[key] for key in (GOLDEN_PROBABILITIES_KEY, GOLDEN_LOGITS_KEY) if key in values).shape[-1])
    golden = record_golden(spec, config.golden_seed, inputs, interface.fetched, values, count=len(inputs.rows),
                           own_images=own_names)
    return golden, classes


def adopt(config: AdoptConfig) -> dict:
    import tensorflow as tf

    from ..data.labels import read_labels_file
    from ..diagnosis.doctor import DoctorOptions, diagnose
    from ..diagnosis.findings import group, summarize
    from ..graph.graphdef import graph_stats, is_text_format, read_model_bytes

    path = config.model
    data = read_model_bytes(path, "pass the frozen graph file (e.g. frozen_resnet_v1_50.pb)")
    diagnosis = diagnose(DoctorOptions(model=path, op_libraries=config.op_libraries,
                                       allow_soft_placement=config.allow_soft_placement, run=False,
                                       allowed_ops=config.allowed_ops))
    if diagnosis.blocking:
        raise InsideError(f"{path} cannot be adopted in this environment (TensorFlow {tf.__version__}): "
                          f"{summarize(group(diagnosis.blocking))}; adopt it in the environment that froze it "
                          "(--requirements FILE or --reference-image TAG)", code=diagnosis.outcome)
    graph_def = diagnosis.graph_def
    interface = read_interface(config, graph_def, path)
    golden, classes = compute_golden(config, diagnosis.graph, interface, path)
    labels, offset = choose_labels(config, classes, read_labels_file)
    text = is_text_format(data)
    manifest = ModelDirectory(
        out=config.out, model_bytes=data, graph_def=graph_def, golden=golden,
        model_file=TEXT_MODEL_FILE if text else MODEL_FILE,
        model={"architecture": _architecture(graph_def), "num_classes": classes,
               "encoding": "text" if text else "binary"},
        inputs=[{"name": interface.node.name, "tensor": interface.input_tensor,
                 "shape": [interface.limit, interface.height, interface.width, 3], "dtype": "float32",
                 "note": "preprocessed as the preprocessing section says"}],
        outputs=[{"name": name, "role": role, "tensor": interface.tensors[role], "shape": [interface.limit, classes],
                  "dtype": "float32"} for role, name in sorted(interface.outputs.items())],
        block_outputs=interface.blocks, spec=interface.spec, labels=labels, labels_offset=offset,
        graph={"node_counts": {"adopted": graph_stats(graph_def)},
               "devices": sorted({n.device for n in graph_def.node if n.device})},
        origin={"adopted": adopted_section(config, data, diagnosis)},
        op_libraries=tuple((library, {}) for library in config.op_libraries)).write()
    log(f"adopt: {os.path.basename(path)} -> {config.out}: input {interface.node.name} {interface.shape}, outputs "
        f"{', '.join(f'{role} {name}' for role, name in sorted(interface.outputs.items()))}, {classes} classes, "
        f"{len(interface.blocks)} block outputs, {interface.spec.preset} preprocessing, golden of "
        f"{len(golden.arrays[GOLDEN_INPUT_KEY])} images")
    return manifest


def adopted_section(config: AdoptConfig, data: bytes, diagnosis) -> dict:
    """Where the model and its golden came from: the file, the reference environment (its lock shipped
    with the model), the doctor's findings there."""
    import tensorflow as tf

    from ..diagnosis.findings import group

    return {"source_file": os.path.basename(config.model), "source_sha256": sha256_bytes(data),
            "reference": config.reference or "the environment adopt ran in",
            "golden_from": f"computed by adopt in the reference environment (TensorFlow {tf.__version__}, "
                           f"soft placement {'on' if config.allow_soft_placement else 'off'})",
            "findings": [finding.to_json() for finding in group(diagnosis.findings)],
            "allowed_ops": sorted(set(config.allowed_ops)),
            "environment": ship_environment(config)}


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
    labels = read_labels_file(config.labels, classes)
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
