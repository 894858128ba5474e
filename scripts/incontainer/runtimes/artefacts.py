"""A runtime's converted model, kept beside the frozen graph in converted/<runtime>/ and treated like
the model: its files' sha256, the source graph's sha256 and the converter versions are recorded in
conversion.json, and every load checks them."""
from __future__ import annotations

import json
import os
import time
from typing import Dict, Optional, Tuple

from ..common import InsideError, PreflightFailed, atomic_write_bytes, atomic_write_json, sha256_bytes
from ..contract import (CONVERSION_FILE, CONVERTED_DIR, ENV_LOCK_SHA256, INT8_TARGETS, MODEL_FILE,
                        RUNTIME_ONNXRUNTIME, RUNTIME_OPENVINO, TFLITE_TARGETS, Code)
from ..graph import manifest as manifests
from ..graph.model_files import read_verified_model
from .backends import ONNX_FILE, OPENVINO_FILES, convert_onnx, read_openvino, versions
from .tflite import TFLITE_FILE

CONVERSION_SCHEMA = 1


def golden_tensors_and_input(manifest: dict) -> Tuple[str, Dict[str, str]]:
    tensors = {entry["key"]: entry["name"] for entry in manifest["golden"]["tensors"]}
    return manifests.tensor_of(manifest["inputs"][0]), tensors


def refuse_dangerous_ops(model_dir: str, allowed_ops: Tuple[str, ...] = ()) -> None:
    """A graph with ops that touch files, Python or the network is not converted (a converter's constant
    folding may run them) unless `allowed_ops` names them."""
    from ..diagnosis.findings import summarize
    from ..diagnosis.opscan import scan, unallowed
    from ..graph.graphdef import parse_graph_def

    manifest = manifests.load_manifest(model_dir)
    source = os.path.join(model_dir, MODEL_FILE)
    dangerous = unallowed(scan(parse_graph_def(read_verified_model(model_dir, manifest), source), allowed_ops))
    if dangerous:
        raise PreflightFailed(f"{source} is not converted: {summarize(dangerous)}", code=Code.DANGEROUS_OP)


def clear(out_dir: str) -> None:
    """A previous artefact's files removed, so nothing stale stays beside the new one."""
    os.makedirs(out_dir, exist_ok=True)
    for stale in (CONVERSION_FILE, ONNX_FILE, TFLITE_FILE) + OPENVINO_FILES:
        if os.path.exists(os.path.join(out_dir, stale)):
            os.remove(os.path.join(out_dir, stale))


def write_record(out_dir: str, manifest: dict, runtime: str, written: list, converter: Dict[str, str],
                 seconds: float, extra: Optional[dict] = None) -> dict:
    """conversion.json, written last and atomically: a directory without it is refused, never half-used."""
    input_tensor, tensors = golden_tensors_and_input(manifest)
    record = {"schema": CONVERSION_SCHEMA, "runtime": runtime, "source": MODEL_FILE,
              "source_sha256": manifest["model"]["sha256"], "input": input_tensor, "tensors": tensors,
              "files": {name: _sha256_file(os.path.join(out_dir, name)) for name in written},
              "versions": converter, "lock_sha256": os.environ.get(ENV_LOCK_SHA256),
              "conversion_s": round(seconds, 3), **(extra or {})}
    atomic_write_json(os.path.join(out_dir, CONVERSION_FILE), record)
    return record


def convert(model_dir: str, runtime: str, out_dir: str) -> dict:
    """Convert the verified model for ONNX Runtime or OpenVINO into out_dir (TFLite targets:
    tflite_conversion.py; int8: int8_conversion.py). The host's step stages out_dir and swaps it in whole."""
    from ..graph.graphdef import parse_graph_def

    manifest = manifests.load_manifest(model_dir)
    data = read_verified_model(model_dir, manifest)
    source = os.path.join(model_dir, MODEL_FILE)
    input_tensor, tensors = golden_tensors_and_input(manifest)
    clear(out_dir)
    start = time.perf_counter()
    if runtime == RUNTIME_ONNXRUNTIME:
        graph_def = parse_graph_def(data, source)
        atomic_write_bytes(os.path.join(out_dir, ONNX_FILE), convert_onnx(graph_def, input_tensor, tensors, source))
        written = [ONNX_FILE]
    elif runtime == RUNTIME_OPENVINO:
        import openvino

        model = read_openvino(source, tensors, source)
        # save_model halves the weights to fp16 unless told not to; the artefact must be the graph's fp32.
        openvino.save_model(model, os.path.join(out_dir, OPENVINO_FILES[0]), compress_to_fp16=False)
        written = list(OPENVINO_FILES)
    else:
        raise InsideError(f"no converter for {runtime!r}; choose {RUNTIME_ONNXRUNTIME}, {RUNTIME_OPENVINO}, "
                          f"{', '.join(INT8_TARGETS)} or {', '.join(TFLITE_TARGETS)}")
    return write_record(out_dir, manifest, runtime, written, versions(runtime), time.perf_counter() - start)


def _sha256_file(path: str) -> str:
    with open(path, "rb") as handle:
        return sha256_bytes(handle.read())


def converted_dir(model_dir: str, runtime: str) -> str:
    return os.path.join(model_dir, CONVERTED_DIR, runtime)


def load_record(model_dir: str, runtime: str, manifest: dict, root: Optional[str] = None) -> Tuple[str, dict]:
    """The verified converted artefact for `runtime` (in `root`/<runtime>/ where given: the drift
    test's own conversions): (directory, conversion record). Refuses one made from another model.pb,
    or whose files changed since conversion."""
    directory = os.path.join(root, runtime) if root else converted_dir(model_dir, runtime)
    path = os.path.join(directory, CONVERSION_FILE)
    fix = f"convert it again: coldchain convert --target {runtime} {model_dir}"
    try:
        with open(path) as handle:
            record = json.load(handle)
    except FileNotFoundError:
        raise InsideError(f"{path} not found: the model has no {runtime} conversion; {fix}") from None
    except (OSError, ValueError) as error:
        raise InsideError(f"{path} is not readable JSON ({error}); {fix}") from None
    if not isinstance(record, dict) or record.get("schema") != CONVERSION_SCHEMA or not isinstance(
            record.get("files"), dict):
        raise InsideError(f"{path} is not a coldchain conversion record; {fix}")
    if record.get("source_sha256") != manifest["model"]["sha256"]:
        raise InsideError(f"{directory} was converted from another model.pb (sha256 {record.get('source_sha256')}, "
                          f"the manifest's is {manifest['model']['sha256']}); {fix}", code=Code.SHA256_MISMATCH)
    for name, expected in record["files"].items():
        file_path = os.path.join(directory, os.path.basename(name))
        try:
            actual = _sha256_file(file_path)
        except OSError:
            raise InsideError(f"{file_path} is missing from the {runtime} conversion; {fix}") from None
        if actual != expected:
            raise InsideError(f"{file_path} changed since it was converted (sha256 {actual}, recorded {expected}); "
                              f"{fix}", code=Code.SHA256_MISMATCH)
    return directory, record
