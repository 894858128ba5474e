"""The reexport step: write a frozen graph out again, either re-serialised by THIS TensorFlow or with
one of the standard fixes applied, keeping everything else of the model directory.

- no flag: import with this TensorFlow and write the graph back out; it then carries this TF's producer
  version and every attribute its OpDefs know, defaults included, which an older TF may not know;
- ``--strip-default-attrs``: drop attributes that hold their OpDef default, the fix that lets an older
  TF load a graph whose only novelty is default-valued attributes;
- ``--clear-devices``: empty every node's device field, the fix for graphs pinned to devices or
  cluster jobs the inference host does not have.
The computation is unchanged, so the golden probe stays valid; the manifest's sha256 is updated.
"""
from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

from ..common import InsideError, log, quiet_tensorflow_logs, run_main, sha256_bytes
from ..contract import (FLAG_CLEAR_DEVICES, FLAG_LOAD_OP_LIBRARIES, FLAG_MODEL, FLAG_OUT, FLAG_STRIP_DEFAULT_ATTRS,
                        MANIFEST_FILE, MODULES, Code)
from ..graph.graphdef import model_path, parse_graph_def, read_model_bytes
from ..graph.model_files import signed_files, verify_signed


def strip_default_attrs(graph_def) -> int:
    """Drop attributes equal to their OpDef default (what tf.compat.v1.saved_model's
    strip_default_attrs does for SavedModels). Returns how many were removed."""
    from tensorflow.python.framework import op_def_registry

    removed = 0
    for node in graph_def.node:
        op_def = op_def_registry.get(node.op)
        if op_def is None:
            continue
        for attr in op_def.attr:
            if attr.HasField("default_value") and attr.name in node.attr and node.attr[attr.name] == attr.default_value:
                del node.attr[attr.name]
                removed += 1
    return removed


def clear_devices(graph_def) -> int:
    cleared = 0
    for node in graph_def.node:
        if node.device:
            node.device = ""
            cleared += 1
    for function in graph_def.library.function:
        for node in function.node_def:
            if node.device:
                node.device = ""
                cleared += 1
    return cleared


def reserialize(graph_def, model: str, load_op_libraries: bool):
    """Import with this TensorFlow and export again (importing adds every default attr it knows)."""
    import tensorflow as tf

    from ..diagnosis.doctor import DoctorOptions, diagnose
    from ..diagnosis.findings import summarize

    diagnosis = diagnose(DoctorOptions(model=model, load_shipped_op_libraries=load_op_libraries,
                                       allow_soft_placement=True, run=False))
    if diagnosis.graph is None or any(f.code in (Code.UNREGISTERED_OP, Code.UNKNOWN_ATTR) for f in diagnosis.blocking):
        raise InsideError(f"cannot re-export {model} with TensorFlow {tf.__version__}: "
                          f"{summarize(diagnosis.blocking)}")
    graph_def = diagnosis.graph.as_graph_def()
    # The importer keeps the producer it was given; a graph this TensorFlow writes carries its own.
    graph_def.versions.producer = tf.version.GRAPH_DEF_VERSION
    graph_def.versions.min_consumer = max(graph_def.versions.min_consumer, tf.version.GRAPH_DEF_VERSION_MIN_CONSUMER)
    return graph_def


def reexport(model: str, out: str, strip: bool, clear: bool, load_op_libraries: bool) -> dict:
    import tensorflow as tf

    from ..graph.manifest import load_manifest
    from ..graph.model_directory import reexported
    from ..runtime import describe

    model_file, model_dir = model_path(model)
    source = read_model_bytes(model_file, "pass a frozen model.pb or its directory")
    signed = signed_files(model_dir)
    if signed is not None:  # --trust: the mounted directory is the one the host verified, the bytes read included
        verify_signed(model_dir, signed, {os.path.realpath(model_file): source})
    graph_def = parse_graph_def(source, model_file)
    edits = {}
    if not (strip or clear):
        graph_def = reserialize(graph_def, model, load_op_libraries)
    if strip:
        edits["attrs_removed"] = strip_default_attrs(graph_def)
    if clear:
        edits["devices_cleared"] = clear_devices(graph_def)
    manifest = load_manifest(model_dir) if os.path.isfile(os.path.join(model_dir, MANIFEST_FILE)) else None
    data = reexported(model_dir, model_file, out, graph_def, manifest, {
        "tensorflow": tf.__version__, "strip_default_attrs": strip, "clear_devices": clear, **edits,
        "environment": describe()})
    log(f"reexport: TensorFlow {tf.__version__}, producer {graph_def.versions.producer}, "
        + (", ".join(f"{key} {value}" for key, value in edits.items()) or "re-serialised") + f" -> {out}")
    return {"sha256": sha256_bytes(data), **edits}


def main(argv: Optional[Sequence[str]] = None) -> Optional[int]:
    quiet_tensorflow_logs()
    parser = argparse.ArgumentParser(prog=f"python -m {MODULES['reexport']}", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(FLAG_MODEL, required=True, help="model directory or frozen graph file to re-export")
    parser.add_argument(FLAG_OUT, required=True, help="new model directory")
    parser.add_argument(FLAG_STRIP_DEFAULT_ATTRS, action="store_true")
    parser.add_argument(FLAG_CLEAR_DEVICES, action="store_true")
    parser.add_argument(FLAG_LOAD_OP_LIBRARIES, dest="load_op_libraries", action="store_true")
    args = parser.parse_args(argv)
    reexport(args.model, args.out, args.strip_default_attrs, args.clear_devices, args.load_op_libraries)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
