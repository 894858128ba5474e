"""manifest.json: what the frozen graph is, how to feed it, and where it was made.

No tf_slim here: infer reads manifests in an image without it.
"""
from __future__ import annotations

import json
import os
import platform
from typing import Any

from .common import InsideError, read_json_file

SCHEMA_VERSION = 1
MANIFEST_FORMAT = "coldchain.frozen_graph"
MODEL_FILENAME = "model.pb"
MANIFEST_FILENAME = "manifest.json"
GOLDEN_FILENAME = "golden.npz"
INPUT_NODE = "input"
LOGITS_NODE = "logits"
PROBABILITIES_NODE = "probabilities"
TOP_K_NODE = "top_k"
HOST_ENV_VARS = ("COLDCHAIN_LOCK_SHA256", "COLDCHAIN_IMAGE_ID")
HOST_JSON_ENV_VARS = ("COLDCHAIN_IMAGE_LABELS",)
REQUIRED_KEYS = ("schema_version", "model", "inputs", "outputs", "preprocessing", "labels", "golden")


def cpu_flags() -> list[str]:
    """The ISA extensions matter for numeric drift (AVX-512 vs AVX2 kernels), so record them."""
    try:
        with open("/proc/cpuinfo", "r", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    return sorted(set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return []


def environment_fingerprint() -> dict:
    import numpy
    import tensorflow as tf

    try:
        from google import protobuf
        protobuf_version = protobuf.__version__
    except ImportError:  # pragma: no cover - TF always ships protobuf
        protobuf_version = None
    try:
        import PIL
        pillow_version = PIL.__version__
    except ImportError:  # pragma: no cover
        pillow_version = None
    try:
        build_info = {key: str(value) for key, value in sorted(tf.sysconfig.get_build_info().items())}
    except Exception:  # noqa: BLE001 - absent on some exotic builds; the rest is still useful
        build_info = {}
    host: dict[str, Any] = {}
    for name in HOST_ENV_VARS:
        if os.environ.get(name):
            host[name] = os.environ[name]
    for name in HOST_JSON_ENV_VARS:
        raw = os.environ.get(name)
        if raw:
            try:
                host[name] = json.loads(raw)
            except json.JSONDecodeError:
                host[name] = {"unparsed": raw}
    return {
        "tensorflow": tf.__version__,
        "tensorflow_git_version": tf.version.GIT_VERSION,
        "tensorflow_compiler": tf.version.COMPILER_VERSION,
        "graph_def_version": tf.version.GRAPH_DEF_VERSION,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "protobuf": protobuf_version,
        "pillow": pillow_version,
        "machine": platform.machine(),
        "build_info": build_info,
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "cpu_flags": cpu_flags(),
        "host": host,
    }


PROTOBUF_LIMIT = 2**31 - 1  # protobuf cannot parse a message of 2 GiB or more


def not_a_frozen_model(path: str) -> str | None:
    """What the user passed instead of a coldchain model directory or frozen graph, if we can tell."""
    name = os.path.basename(path.rstrip("/"))
    if os.path.isdir(path):
        try:
            entries = set(os.listdir(path))
        except PermissionError:
            raise InsideError(f"cannot list {path}: permission denied; the container runs as uid {os.getuid()}, so "
                              "make the directory readable by others (chmod o+rx) or pass a readable copy") from None
        if {"saved_model.pb", "saved_model.pbtxt"} & entries:
            return (f"{path} is a SavedModel directory, not a frozen graph; freeze the training run instead "
                    "(coldchain freeze --run DIR), or load it with tf.saved_model.load")
        if "checkpoint" in entries or any(entry.endswith(".index") for entry in entries):
            return f"{path} holds a training checkpoint, not a frozen graph; run coldchain freeze --run {path}"
    elif name in ("saved_model.pb", "saved_model.pbtxt"):
        return f"{path} is a SavedModel, not a frozen graph; freeze the training run instead (coldchain freeze --run DIR)"
    elif name.endswith((".index", ".meta")) or ".data-" in name or name.startswith("model.ckpt"):
        return f"{path} is a training checkpoint file, not a frozen graph; run coldchain freeze --run <its directory>"
    return None


def check_model_size(path: str) -> None:
    try:
        size = os.path.getsize(path)
    except OSError:
        return
    if size > PROTOBUF_LIMIT:
        raise InsideError(f"{path} is {size / 2**30:.2f} GiB, over protobuf's 2 GiB limit, so no TensorFlow can parse "
                          "it as a GraphDef; a model this large must be shipped as a SavedModel (weights stored "
                          "beside the graph), not a frozen graph")


def read_model_bytes(path: str, missing_fix: str) -> bytes:
    """The frozen graph's bytes, after the size check; every failure named with its fix."""
    check_model_size(path)
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise InsideError(f"model file not found: {path}; {missing_fix}") from None
    except IsADirectoryError:
        raise InsideError(f"{path} is a directory; point at the model.pb file inside it") from None
    except OSError as error:
        raise InsideError(f"cannot read model file {path} ({error.strerror}); check permissions") from None


def load_manifest(model_dir: str) -> dict:
    path = os.path.join(model_dir, MANIFEST_FILENAME)
    fix = "re-run `python -m incontainer.freeze` to regenerate the model directory"
    if not os.path.exists(path) and (hint := not_a_frozen_model(model_dir)):
        raise InsideError(hint)
    manifest = read_json_file(path, "manifest", fix)
    if not isinstance(manifest, dict):
        raise InsideError(f"manifest {path} is not a JSON object; {fix}")
    version = manifest.get("schema_version")
    if not isinstance(version, int):
        raise InsideError(f"manifest {path} has no integer schema_version; {fix}")
    if version > SCHEMA_VERSION:
        raise InsideError(
            f"manifest {path} has schema_version {version}, newer than the {SCHEMA_VERSION} this runtime reads; "
            "upgrade the inference image's coldchain scripts"
        )
    if version < 1:
        raise InsideError(f"manifest {path} has invalid schema_version {version}; {fix}")
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing:
        raise InsideError(f"manifest {path} lacks {', '.join(missing)}; {fix}")
    model = manifest["model"]
    if not isinstance(model, dict) or not isinstance(model.get("sha256"), str):
        raise InsideError(f"manifest {path} has no model.sha256; {fix}")
    labels = manifest["labels"]
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(label, str) for label in labels):
        raise InsideError(f"manifest {path} has no usable label list; {fix}")
    for key in ("inputs", "outputs"):
        entries = manifest[key]
        if not isinstance(entries, list) or not all(isinstance(e, dict) and "name" in e and "shape" in e for e in entries):
            raise InsideError(f"manifest {path} field {key} must list objects with name and shape; {fix}")
    return manifest
