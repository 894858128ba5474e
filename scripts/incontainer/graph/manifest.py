"""manifest.json: what a frozen graph is, how to feed it, where it was made, and the one validator
that doctor, infer and the drift probe share. Every problem is named by its field and its file;
a malformed manifest never surfaces as a KeyError.

No tf_slim and no TensorFlow here: the inference image reads manifests without either.
"""
from __future__ import annotations

import io
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from ..common import InsideError, sha256_bytes
from ..confine import check_npz, plain_name, read_bounded, recorded_shapes
from ..contract import (GOLDEN_FILE, GOLDEN_LOGITS_KEY, GOLDEN_PROBABILITIES_KEY, MANIFEST_FILE, MANIFEST_SCHEMA_VERSION,
                        MODEL_FILE, Code)
from ..golden.budget import BUDGET_FIELD
from ..golden.budget import problems as budget_problems
from .graphdef import sniff_directory

REQUIRED_KEYS = ("schema_version", "model", "inputs", "outputs", "preprocessing", "labels", "golden")
ROLES = ("logits", "probabilities", "top_k")
# Stored inside golden.npz: the preprocessing spec the golden tensors were made with (UTF-8 JSON),
# so an edited manifest can be told apart from a runtime that preprocesses differently.
GOLDEN_SPEC_KEY = "preprocessing_spec_json"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Problem:
    field: str
    message: str
    code: str = Code.MANIFEST_INVALID

    def text(self, path: str) -> str:
        return f"{path}: {self.field}: {self.message}"


class ManifestInvalid(InsideError):
    def __init__(self, path: str, problems: List[Problem]):
        first = problems[0]
        more = f" (and {len(problems) - 1} more: {'; '.join(p.field for p in problems[1:4])})" if len(problems) > 1 else ""
        super().__init__(first.text(path) + more, code=first.code)
        self.problems = problems


def no_manifest_message(model_dir: str) -> str:
    return (f"{model_dir} has no {MANIFEST_FILE}: coldchain needs one beside the graph. If you did not train this "
            f"model with coldchain, adopt it: coldchain adopt {os.path.join(model_dir, MODEL_FILE)} --out DIR "
            "(make adopt MODEL=...), which writes the manifest and golden outputs without changing the model")


def read_manifest(model_dir: str, manifest_path: Optional[str] = None) -> dict:
    """The manifest as JSON, unchecked (validate() says what is wrong with it)."""
    path = manifest_path or os.path.join(model_dir, MANIFEST_FILE)
    if not os.path.exists(path):
        if manifest_path is None and os.path.isdir(model_dir):
            hint = sniff_directory(model_dir)
            raise InsideError(hint or no_manifest_message(model_dir))
        raise InsideError(f"manifest not found: {path}; pass the manifest.json written by freeze or adopt")
    fix = "restore the manifest.json written by freeze or adopt"
    if os.path.isdir(path):
        raise InsideError(f"manifest {path} is a directory, not a JSON file; {fix}")
    try:  # bounded, from a regular file: `manifest.json -> /dev/zero` is refused (confine.Refused)
        data = read_bounded(path, "manifest", model_dir if manifest_path is None else None)
        return json.loads(data.decode("utf-8"))
    except FileNotFoundError:
        raise InsideError(f"manifest not found: {path}; {fix}") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise InsideError(f"manifest {path} is not readable JSON ({error}); {fix}") from None


def load_manifest(model_dir: str, manifest_path: Optional[str] = None) -> dict:
    """A structurally valid manifest, or ManifestInvalid naming the first problem's field."""
    path = manifest_path or os.path.join(model_dir, MANIFEST_FILE)
    manifest = read_manifest(model_dir, manifest_path)
    problems = validate(manifest)
    if problems:
        raise ManifestInvalid(path, problems)
    return manifest


def _is_shape(value: Any) -> bool:
    return isinstance(value, list) and all(item is None or (isinstance(item, int) and item > 0) for item in value)


def validate(manifest: Any) -> List[Problem]:
    """Schema and required fields, one problem per mistake."""
    if not isinstance(manifest, dict):
        return [Problem("(top level)", "is not a JSON object; restore the manifest.json written by freeze or adopt")]
    problems: List[Problem] = []
    version = manifest.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        problems.append(Problem("schema_version", "missing or not an integer"))
    elif version > MANIFEST_SCHEMA_VERSION:
        return [Problem("schema_version", f"is {version}, newer than the {MANIFEST_SCHEMA_VERSION} this runtime reads; "
                                          "upgrade the inference image's coldchain scripts")]
    elif version < 1:
        problems.append(Problem("schema_version", f"{version} is invalid"))
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    problems += [Problem(key, "is required but missing") for key in missing]
    model = manifest.get("model")
    if "model" not in missing:
        if not isinstance(model, dict):
            problems.append(Problem("model", "must be an object"))
        else:
            if not isinstance(model.get("sha256"), str) or not _SHA256.match(model.get("sha256", "")):
                problems.append(Problem("model.sha256", "missing or not a 64-digit sha256: the model cannot be verified"))
            name = model.get("file", MODEL_FILE)
            if not isinstance(name, str) or os.path.basename(name) != name or name in ("", ".", ".."):
                problems.append(Problem("model.file", f"{name!r} must be a plain file name beside the manifest"))
    for key in ("inputs", "outputs"):
        entries = manifest.get(key)
        if key in missing:
            continue
        if not isinstance(entries, list) or not entries:
            problems.append(Problem(key, "must be a non-empty list"))
            continue
        for index, entry in enumerate(entries):
            where = f"{key}[{index}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry.get("name"):
                problems.append(Problem(where, "must be an object with a node name"))
            elif "shape" in entry and not _is_shape(entry["shape"]):
                problems.append(Problem(f"{where}.shape", f"{entry['shape']!r} is not a list of positive sizes or null"))
            elif key == "outputs" and entry.get("role", output_role(entry)) not in ROLES + (None,):
                problems.append(Problem(f"{where}.role", f"{entry.get('role')!r} is not one of {', '.join(ROLES)}"))
    if "outputs" not in missing and isinstance(manifest.get("outputs"), list) and not any(
            isinstance(entry, dict) and output_role(entry) in ("logits", "probabilities") for entry in manifest["outputs"]):
        problems.append(Problem("outputs", "names neither a logits nor a probabilities output"))
    labels = manifest.get("labels")
    if "labels" not in missing and (not isinstance(labels, list) or len(labels) < 2
                                    or not all(isinstance(label, str) for label in labels)):
        problems.append(Problem("labels", "must be a list of at least two class names"))
    offset = manifest.get("labels_offset", 0)
    if not isinstance(offset, int) or isinstance(offset, bool) or offset not in (0, 1):
        problems.append(Problem("labels_offset", f"{offset!r} must be 0 or 1 (1: class 0 is slim's 'background')"))
    if "preprocessing" not in missing:
        from ..data.preprocess import PreprocessSpec

        try:
            PreprocessSpec.from_json(manifest["preprocessing"], MANIFEST_FILE)
        except InsideError as error:
            problems.append(Problem("preprocessing", str(error).replace(f"in {MANIFEST_FILE}", "").strip()))
    golden = manifest.get("golden")
    if "golden" not in missing:
        problems += _validate_golden_section(golden)
    return problems


def _validate_golden_section(golden: Any) -> List[Problem]:
    if not isinstance(golden, dict):
        return [Problem("golden", "must be an object")]
    problems = []
    if not isinstance(golden.get("input_key"), str):
        problems.append(Problem("golden.input_key", "missing"))
    tensors = golden.get("tensors")
    if not isinstance(tensors, list) or not tensors:
        return problems + [Problem("golden.tensors", "must be a non-empty list")]
    for index, entry in enumerate(tensors):
        where = f"golden.tensors[{index}]"
        if not isinstance(entry, dict):
            problems.append(Problem(where, "must be an object"))
            continue
        for key, kind in (("key", str), ("name", str), ("abs_tol", (int, float)), ("rel_tol", (int, float))):
            if not isinstance(entry.get(key), kind) or isinstance(entry.get(key), bool):
                problems.append(Problem(f"{where}.{key}", "missing or of the wrong type"))
    if not any(isinstance(entry, dict) and entry.get("key") in (GOLDEN_LOGITS_KEY, GOLDEN_PROBABILITIES_KEY)
               for entry in tensors):
        problems.append(Problem("golden.tensors", "records neither logits nor probabilities"))
    probe = golden.get("preprocessing_probe")
    if probe is not None and (not isinstance(probe, dict) or not all(
            isinstance(probe.get(key), str) for key in ("raw_key", "expected_key")) or not all(
            isinstance(probe.get(key), (int, float)) for key in ("abs_tol", "mean_abs_tol"))):
        problems.append(Problem("golden.preprocessing_probe", "must name raw_key, expected_key, abs_tol, mean_abs_tol"))
    if golden.get(BUDGET_FIELD) is not None:  # optional: manifests from before it judge bf16 by the fraction alone
        keys = {entry.get("key") for entry in tensors if isinstance(entry, dict)}
        problems += [Problem(field, f"{message}; re-run freeze / adopt to measure it again")
                     for field, message in budget_problems(golden[BUDGET_FIELD], keys)]
    return problems + _validate_encoded(golden.get("encoded"))


def _validate_encoded(section: Any) -> List[Problem]:
    """golden.encoded: the encoded golden files and the input rows they make (encoded.py)."""
    if section is None:
        return []
    files = section.get("files") if isinstance(section, dict) else None
    if not isinstance(files, list) or not files:
        return [Problem("golden.encoded", "must be an object with a non-empty files list")]
    problems = []
    for index, entry in enumerate(files):
        name = entry.get("name") if isinstance(entry, dict) else None
        row = entry.get("row") if isinstance(entry, dict) else None
        if not isinstance(name, str) or os.path.basename(name) != name or name in ("", ".", ".."):
            problems.append(Problem(f"golden.encoded.files[{index}].name", f"{name!r} must be a plain file name"))
        if not isinstance(row, int) or isinstance(row, bool) or row < 0:
            problems.append(Problem(f"golden.encoded.files[{index}].row", f"{row!r} must be a row of the golden input"))
    return problems


def output_role(entry: dict) -> Optional[str]:
    """An output's role; manifests written before roles existed name the output after it."""
    role = entry.get("role")
    if role:
        return role
    name = entry.get("name")
    return name if name in ROLES else None


def output_entry(manifest: dict, role: str) -> Optional[dict]:
    return next((entry for entry in manifest["outputs"] if output_role(entry) == role), None)


def tensor_of(entry: dict) -> str:
    return entry.get("tensor") or f"{entry['name']}:0"


def num_classes(manifest: dict, arrays: Optional[dict] = None) -> Optional[int]:
    for role in ("probabilities", "logits"):
        if arrays is not None and role in arrays and getattr(arrays[role], "ndim", 0) >= 2:
            return int(arrays[role].shape[-1])
        entry = output_entry(manifest, role)
        if entry and isinstance(entry.get("shape"), list) and entry["shape"] and isinstance(entry["shape"][-1], int):
            return entry["shape"][-1]
    classes = manifest.get("model", {}).get("num_classes")
    return classes if isinstance(classes, int) else None


def label_for(manifest: dict, index: int) -> str:
    """The name of class `index`; with labels_offset 1, class 0 is slim's background class."""
    offset = manifest.get("labels_offset", 0)
    if index < offset:
        return "background"
    return manifest["labels"][index - offset]


def load_golden_arrays(model_dir: str, manifest: dict) -> Dict[str, Any]:
    """golden.npz, verified against the manifest's hash; InsideError naming what is wrong."""
    golden = manifest["golden"]
    name = plain_name(golden.get("file", GOLDEN_FILE), "golden.file", os.path.join(model_dir, MANIFEST_FILE))
    path = os.path.join(model_dir, name)
    try:
        golden_bytes = read_bounded(path, "golden", model_dir)
    except FileNotFoundError:
        raise InsideError(f"golden probe file not found: {path}; copy golden.npz with the model",
                          code=Code.MANIFEST_INVALID) from None
    if golden.get("sha256") and sha256_bytes(golden_bytes) != golden["sha256"]:
        raise InsideError(f"{path} has sha256 {sha256_bytes(golden_bytes)}, the manifest's golden.sha256 is "
                          f"{golden['sha256']}; copy the model directory again", code=Code.MANIFEST_INVALID)
    check_npz(golden_bytes, path, recorded_shapes(manifest))  # headers first: no 10^13-element allocation
    import numpy as np

    try:
        with np.load(io.BytesIO(golden_bytes), allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as error:
        raise InsideError(f"golden probe {path} is unreadable ({error}); copy the model directory again",
                          code=Code.MANIFEST_INVALID) from None
    wanted = [entry["key"] for entry in golden["tensors"]] + [golden["input_key"]]
    from ..golden.encoded import array_keys

    wanted += array_keys(golden.get("encoded"))
    missing = [key for key in wanted if key not in arrays]
    if missing:
        raise InsideError(f"golden probe {path} lacks arrays {missing} that the manifest's golden section names; "
                          "model directory and manifest come from different freezes", code=Code.MANIFEST_INVALID)
    rows = len(arrays[golden["input_key"]])
    beyond = [entry["name"] for entry in (golden.get("encoded") or {}).get("files", []) if entry["row"] >= rows]
    if beyond:
        raise InsideError(f"{MANIFEST_FILE}: golden.encoded names rows past the {rows} golden inputs for {beyond}; "
                          "model directory and manifest come from different freezes", code=Code.MANIFEST_INVALID)
    return arrays


def golden_spec(arrays: Dict[str, Any]) -> Optional[dict]:
    value = arrays.get(GOLDEN_SPEC_KEY)
    if value is None:
        return None
    try:
        return json.loads(bytes(value.astype("uint8").tobytes()).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None


def encode_spec(spec_json: dict):
    import numpy as np

    return np.frombuffer(json.dumps(spec_json, sort_keys=True).encode("utf-8"), dtype=np.uint8).copy()


def validate_directory(model_dir: str, manifest: dict, arrays: Optional[Dict[str, Any]] = None) -> List[Problem]:
    """What only the files beside the manifest can tell: golden.npz present and matching, labels
    against the model's classes, and the preprocessing spec being the one the golden was made with
    (a runtime that preprocesses differently is the golden check's finding, not the manifest's)."""
    from ..data.preprocess import PreprocessSpec, differing_fields

    problems: List[Problem] = []
    if arrays is None:
        try:
            arrays = load_golden_arrays(model_dir, manifest)
        except InsideError as error:
            return [Problem("golden", str(error))]
    classes = num_classes(manifest, arrays)
    offset = manifest.get("labels_offset", 0)
    if classes is not None and len(manifest["labels"]) + offset != classes:
        problems.append(Problem("labels", f"{len(manifest['labels'])} names (labels_offset {offset}) for a model with "
                                          f"{classes} classes; pass the model's own labels file (1000 classes plus "
                                          "slim's background is labels_offset 1)"))
    spec = PreprocessSpec.from_json(manifest["preprocessing"], MANIFEST_FILE)
    recorded = golden_spec(arrays)
    if recorded is not None:
        try:
            original = PreprocessSpec.from_json(recorded, GOLDEN_FILE)
        except InsideError:
            original = None
        fields = differing_fields(spec, original) if original is not None else {}
        if fields:
            named = ", ".join(f"{key} is {value['here']!r} but golden.npz was made with {value['training']!r}"
                              for key, value in fields.items())
            problems.append(Problem("preprocessing", f"edited after the golden was made: {named}; restore the field "
                                                     "(or re-run freeze / adopt)"))
    return problems
