"""Reading frozen graphs: what a file really is, parsing it (binary or text GraphDef), its inventory,
and importing it into this TensorFlow with the importer's error classified."""
from __future__ import annotations

import collections
import json
import os
import re
from typing import List, Optional, Tuple

from ..common import InsideError
from ..confine import read_bounded
from ..contract import MANIFEST_FILE, MODEL_FILE, Code

PROTOBUF_LIMIT = 2**31 - 1  # protobuf cannot parse a message of 2 GiB or more
_SAVED_MODEL_FIX = ("freeze it first: load it and convert its variables to constants "
                    "(tf.compat.v1.graph_util.convert_variables_to_constants), or run coldchain freeze on a kit run")


class NotAFrozenGraph(InsideError):
    """The input is something else (a SavedModel, a checkpoint, an image, an archive...)."""

    def __init__(self, message: str):
        super().__init__(message, code=Code.NOT_A_GRAPH)


class UnreadableGraph(InsideError):
    def __init__(self, message: str):
        super().__init__(message, code=Code.MODEL_UNREADABLE)


def sniff_directory(path: str) -> Optional[str]:
    """What a directory passed as a model is, when it is not a coldchain model directory."""
    try:
        entries = set(os.listdir(path))
    except PermissionError:
        raise InsideError(f"cannot list {path}: permission denied; the container runs as uid {os.getuid()}, so "
                          "make the directory readable by others (chmod o+rx) or pass a readable copy") from None
    if {"saved_model.pb", "saved_model.pbtxt"} & entries:
        return f"{path} is a SavedModel directory, not a frozen graph; {_SAVED_MODEL_FIX}"
    if "checkpoint" in entries or any(entry.endswith(".index") for entry in entries):
        if MODEL_FILE not in entries:
            return (f"{path} holds a training checkpoint, not a frozen graph; freeze it with TensorFlow's "
                    "freeze_graph (or coldchain freeze --run for a kit run)")
    return None


def sniff_name(path: str) -> Optional[str]:
    name = os.path.basename(path.rstrip("/"))
    if name in ("saved_model.pb", "saved_model.pbtxt"):
        return f"{path} is a SavedModel, not a frozen graph; {_SAVED_MODEL_FIX}"
    if name.endswith(".index") or ".data-" in name or name == "checkpoint":
        return (f"{path} is part of a training checkpoint, not a frozen graph; freeze the checkpoint with "
                "TensorFlow's freeze_graph (or coldchain freeze --run for a kit run)")
    return None


def sniff_bytes(data: bytes, path: str) -> Optional[str]:
    """Name a file that is plainly not a binary GraphDef, with the fix; None when it may be one."""
    head = data[:512]
    kinds = (
        (b"\xff\xd8\xff", "a JPEG image"), (b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"GIF8", "a GIF image"),
        (b"BM", None), (b"PK\x03\x04", "a zip archive (a .keras file or a zipped model directory?)"),
        (b"\x1f\x8b", "a gzip archive"), (b"\x89HDF\r\n\x1a\n", "an HDF5 file (a Keras .h5 model?)"),
        (b"%PDF", "a PDF document"), (b"\x7fELF", "a shared library or executable"),
    )
    for magic, what in kinds:
        if what and head.startswith(magic):
            return f"{path} is {what}, not a frozen graph; pass the frozen GraphDef (model.pb) itself"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return f"{path} is a WebP image, not a frozen graph; pass the frozen GraphDef (model.pb) itself"
    if len(data) > 262 and data[257:262] == b"ustar":
        return f"{path} is a tar archive; unpack it (tar xf) and pass the frozen graph inside"
    if head[4:8] == b"TFL3":
        return (f"{path} is a TensorFlow Lite model; coldchain checks frozen GraphDefs: pass the graph the "
                ".tflite file was converted from")
    if b"onnx" in head[:64].lower() and head[:1] == b"\x08":
        return f"{path} is an ONNX model, not a TensorFlow frozen graph; pass the GraphDef it was converted from"
    return None


def _proto_kind(data: bytes, path: str) -> Optional[str]:
    """A SavedModel or MetaGraphDef proto renamed to .pb parses badly as a GraphDef; name it."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

    try:
        saved = saved_model_pb2.SavedModel()
        saved.ParseFromString(data)
        if saved.meta_graphs and saved.meta_graphs[0].graph_def.node:
            return f"{path} is a SavedModel's saved_model.pb (renamed?), not a frozen graph; {_SAVED_MODEL_FIX}"
    except (DecodeError, RuntimeWarning, ValueError):
        pass
    try:
        meta = meta_graph_pb2.MetaGraphDef()
        meta.ParseFromString(data)
        if meta.graph_def.node and meta.HasField("meta_info_def"):
            return (f"{path} is a MetaGraphDef (a checkpoint's .meta file): the graph without its weights; freeze it "
                    "with TensorFlow's freeze_graph --input_meta_graph ... --input_checkpoint ...")
    except (DecodeError, RuntimeWarning, ValueError):
        pass
    return None


def _looks_like_text(data: bytes) -> Optional[str]:
    try:
        text = data[:65536].decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if re.match(r"\s*(#[^\n]*\n\s*)*[A-Za-z_][A-Za-z0-9_]*\s*[:{]", text) else None


def check_model_size(path: str) -> None:
    try:
        size = os.path.getsize(path)
    except OSError:
        return
    if size > PROTOBUF_LIMIT:
        raise NotAFrozenGraph(
            f"{path} is {size / 2**30:.2f} GiB, over protobuf's 2 GiB limit, so no TensorFlow can parse it as a "
            "GraphDef; a model this large must be shipped as a SavedModel (weights stored beside the graph)")


def read_model_bytes(path: str, missing_fix: str) -> bytes:
    """The file's bytes, after the size check; every failure named with its fix."""
    check_model_size(path)
    if os.path.isdir(path):
        raise InsideError(f"{path} is a directory; point at the frozen graph file inside it")
    try:
        # Bounded, from a regular file inside its own folder: `model.pb -> /dev/zero` is refused (confine.Refused).
        return read_bounded(path, "model", os.path.dirname(path) or ".")
    except FileNotFoundError:
        raise InsideError(f"model file not found: {path}; {missing_fix}") from None
    except IsADirectoryError:
        raise InsideError(f"{path} is a directory; point at the frozen graph file inside it") from None
    except OSError as error:
        raise InsideError(f"cannot read model file {path} ({error.strerror}); check permissions") from None


def parse_graph_def(data: bytes, path: str):
    """A GraphDef from binary or text-format bytes; anything else is named for what it is."""
    import tensorflow as tf
    from google.protobuf import text_format
    from google.protobuf.message import DecodeError

    hint = sniff_name(path) or sniff_bytes(data, path)
    if hint:
        raise NotAFrozenGraph(hint)
    if not data:
        raise UnreadableGraph(f"{path} is empty (0 bytes), an empty GraphDef: the copy failed - copy the model again")
    text = _looks_like_text(data)
    graph_def = tf.compat.v1.GraphDef()
    if text is not None:
        try:
            text_format.Parse(data.decode("utf-8"), graph_def)
        except (text_format.ParseError, UnicodeDecodeError) as error:
            raise NotAFrozenGraph(f"{path} is a text file but not a text-format GraphDef ({str(error)[:200]}); pass "
                                  "the frozen graph (binary model.pb or its .pbtxt)") from None
    else:
        failure = None
        try:
            graph_def.ParseFromString(data)
        except (DecodeError, RuntimeWarning, ValueError) as error:
            failure = str(error) or type(error).__name__
        if failure is not None or not _plausible(graph_def):
            kind = _proto_kind(data, path)
            if kind:
                raise NotAFrozenGraph(kind)
        if failure is not None:
            raise UnreadableGraph(f"{path} is not a valid frozen GraphDef ({failure}): the file is corrupt or "
                                  "truncated - copy it again or re-export it")
    if not graph_def.node:
        raise UnreadableGraph(f"{path} parses as an empty GraphDef (no nodes); the file is corrupt or not a frozen "
                              "model - copy it again or re-export it")
    return graph_def


def is_text_format(data: bytes) -> bool:
    return _looks_like_text(data) is not None


def _plausible(graph_def) -> bool:
    """A real GraphDef names its ops; bytes of another proto parsed as one give nodes without."""
    return bool(graph_def.node) and all(node.op for node in graph_def.node[:50])


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


def sinks(graph_def) -> List[str]:
    """Nodes nothing consumes: the graph's likely outputs."""
    consumed = {name.lstrip("^").split(":")[0] for node in graph_def.node for name in node.input}
    return sorted(node.name for node in graph_def.node if node.name not in consumed and node.op not in ("NoOp", "Const"))


def placeholders(graph_def) -> list:
    """The inputs a caller must feed (a PlaceholderWithDefault has a value of its own)."""
    return [node for node in graph_def.node if node.op in ("Placeholder", "PlaceholderV2")]


def placeholder_shape(node) -> Optional[List[Optional[int]]]:
    if "shape" not in node.attr or node.attr["shape"].shape.unknown_rank:
        return None
    return [dim.size if dim.size >= 0 else None for dim in node.attr["shape"].shape.dim]


# The importer's refusals, classified by the kit's codes (the message itself is quoted, never parsed further).
_IMPORT_ERRORS = (
    (re.compile(r"Op type not registered|not registered in binary"), Code.UNREGISTERED_OP),
    (re.compile(r"NodeDef mentions attr|which is not in the op definition|Unknown attr"), Code.UNKNOWN_ATTR),
    (re.compile(r"min consumer version|GraphDef min consumer"), Code.GRAPH_TOO_NEW),
    (re.compile(r"producer version .* below min producer|below min producer"), Code.GRAPH_TOO_OLD),
    (re.compile(r"bad consumer"), Code.BAD_CONSUMER),
    (re.compile(r"_ref\b|incompatible with expected \w+_ref|expected .*_ref"), Code.REF_DTYPE),
)
_RUN_ERRORS = (
    (re.compile(r"uninitialized|Container localhost does not exist|Resource localhost/|FailedPrecondition.*variable",
                re.IGNORECASE), Code.TRAINING_OP),
    (re.compile(r"Cannot assign a device|Could not satisfy explicit device|no supported kernel for|"
                r"device specification", re.IGNORECASE), Code.DEVICE_UNAVAILABLE),
)


def classify_import_error(message: str) -> str:
    for pattern, code in _IMPORT_ERRORS:
        if pattern.search(message):
            return code
    return Code.LOAD_ERROR


def classify_run_error(message: str) -> str:
    for pattern, code in _RUN_ERRORS:
        if pattern.search(message):
            if code == Code.DEVICE_UNAVAILABLE and re.search(r"/job:(?!localhost)", message):
                return Code.DEVICE_CLUSTER
            return code
    return Code.RUN_ERROR


class ImportFailed(InsideError):
    def __init__(self, message: str, code: str):
        super().__init__(message, code=code)


def import_graph(graph_def):
    """The graph imported into a fresh tf.Graph by this runtime's own importer; its refusal is
    raised as ImportFailed with the kit's classification and TensorFlow's first line."""
    import tensorflow as tf

    graph = tf.Graph()
    try:
        with graph.as_default():
            tf.compat.v1.import_graph_def(graph_def, name="")
    except (ValueError, TypeError, tf.errors.OpError) as error:
        first = first_line(error)
        raise ImportFailed(first, classify_import_error(first)) from None
    return graph


# Lines TensorFlow puts before the one that says what went wrong.
_PREAMBLE = re.compile(r"^(Graph execution error:|Detected at node|Node: |\s+File |\s*$)")


def first_line(error: BaseException) -> str:
    """The line of a TensorFlow error that says what went wrong (not "Graph execution error:")."""
    text = getattr(error, "message", None) or str(error)
    lines = [line.strip() for line in text.strip().splitlines()]
    meaningful = [line for line in lines if line and not _PREAMBLE.match(line)]
    return (meaningful or lines or [type(error).__name__])[0][:500]


def model_path(model: str) -> Tuple[str, str]:
    """(graph file, directory) from a file or directory argument; in a model directory, the file its
    manifest names (an adopted text-format graph keeps its .pbtxt)."""
    if not os.path.isdir(model):
        return model, os.path.dirname(model) or "."
    name = MODEL_FILE
    try:
        data = read_bounded(os.path.join(model, MANIFEST_FILE), "manifest", model)
        recorded = json.loads(data.decode("utf-8")).get("model", {}).get("file")
        if isinstance(recorded, str) and os.path.basename(recorded) == recorded and recorded not in ("", ".", ".."):
            name = recorded
    except (OSError, ValueError, AttributeError):
        pass  # a broken manifest is named field by field where it is read for use (a hostile one: Refused)
    return os.path.join(model, name), model
