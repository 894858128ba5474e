"""Re-export a frozen model with THIS TensorFlow: import it and write the graph back out.

Two uses in the drift test, both real-world situations:
- a graph re-exported by a newer TF carries that TF's producer version and every attribute its
  OpDefs know, defaults included, which an older TF may not know ("NodeDef mentions attr ...");
- `--strip-default-attrs` removes attributes that hold their OpDef default, the standard fix that
  lets an older TF load a graph whose only novelty is default-valued attributes.
The golden probe stays valid: the computation is unchanged, only its serialisation differs.
"""
from __future__ import annotations

import argparse
import os
import shutil
from typing import Sequence

from .common import atomic_write_bytes, atomic_write_json, log, quiet_tensorflow_logs, run_main, sha256_bytes
from .doctor import DoctorOptions, diagnose, runtime_description
from .freeze import graph_stats, op_inventory
from .manifest import MANIFEST_FILENAME, MODEL_FILENAME, load_manifest


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


def reexport(model_dir: str, out: str, strip: bool, load_op_libraries: bool) -> dict:
    import tensorflow as tf

    diagnosis = diagnose(DoctorOptions(model=model_dir, load_shipped_op_libraries=load_op_libraries,
                                       allow_soft_placement=True))
    if diagnosis.graph_def is None or any(f.code in ("unregistered-op", "unknown-attr") for f in diagnosis.blocking):
        from .common import InsideError
        from .preflight import summarize

        raise InsideError(f"cannot re-export {model_dir} with TensorFlow {tf.__version__}: "
                          f"{summarize(diagnosis.blocking)}")
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(diagnosis.graph_def, name="")
    graph_def = graph.as_graph_def()  # importing adds every default attr this TF's OpDefs know
    removed = strip_default_attrs(graph_def) if strip else 0
    data = graph_def.SerializeToString(deterministic=True)
    manifest = load_manifest(model_dir)
    manifest["model"].update(sha256=sha256_bytes(data), size_bytes=len(data))
    manifest["graph"].update(producer=graph_def.versions.producer, min_consumer=graph_def.versions.min_consumer,
                             op_inventory=op_inventory(graph_def))
    manifest["graph"].setdefault("node_counts", {})["after_reexport"] = graph_stats(graph_def)
    manifest["graph"].setdefault("transforms", {})["reexport"] = {
        "tensorflow": tf.__version__, "strip_default_attrs": strip, "attrs_removed": removed,
        "environment": runtime_description()}
    os.makedirs(out, exist_ok=True)
    for name in sorted(os.listdir(model_dir)):
        source = os.path.join(model_dir, name)
        if name in (MODEL_FILENAME, MANIFEST_FILENAME) or name.startswith("."):
            continue
        if os.path.isdir(source):
            shutil.copytree(source, os.path.join(out, name), dirs_exist_ok=True)
        else:
            shutil.copyfile(source, os.path.join(out, name))
    atomic_write_bytes(os.path.join(out, MODEL_FILENAME), data)
    atomic_write_json(os.path.join(out, MANIFEST_FILENAME), manifest)
    log(f"reexport: TensorFlow {tf.__version__}, producer {graph_def.versions.producer}, "
        f"{removed} default-valued attrs stripped -> {out}")
    return manifest


def main(argv: Sequence[str] | None = None) -> int | None:
    quiet_tensorflow_logs()
    parser = argparse.ArgumentParser(prog="python -m incontainer.reexport", description=__doc__)
    parser.add_argument("--model", required=True, help="model directory to re-export")
    parser.add_argument("--out", required=True, help="new model directory")
    parser.add_argument("--strip-default-attrs", action="store_true")
    parser.add_argument("--load-op-libraries", action="store_true")
    args = parser.parse_args(argv)
    reexport(args.model, args.out, args.strip_default_attrs, args.load_op_libraries)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
