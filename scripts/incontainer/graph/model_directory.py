"""The model directory, written in one place for freeze, adopt and reexport: golden.npz and its
sha256, the shipped custom-op libraries, the model file, then manifest.json last (a reader that sees
it sees a complete set). The manifest's schema - its sections, the golden section's fields - is
assembled here and nowhere else; a step says only what is its own (the model's interface, its
labels, the graph's transforms, where the model came from).

The golden probe's inputs (synthetic images, the user's own, then the encoded JPEG/PNG files') and
its record (golden.npz's arrays, the tensor entries with their tolerances) are made here too; running
the graph on them is the step's, each in its own session. No TensorFlow at import (numpy neither:
the manifest's assembly is plain data).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence, Tuple

from ..common import atomic_write_bytes, atomic_write_json, sha256_bytes, write_deterministic_npz
from ..contract import (GOLDEN_FILE, GOLDEN_INPUT_KEY, GOLDEN_LOGITS_KEY, GOLDEN_PROBABILITIES_KEY, GOLDEN_RAW_KEY,
                        GOLDEN_RAW_PREPROCESSED_KEY, MANIFEST_FILE, MANIFEST_FORMAT, MANIFEST_SCHEMA_VERSION,
                        MODEL_FILE, OPS_DIR)
from .graphdef import graph_stats, op_inventory

if TYPE_CHECKING:
    from ..data.preprocess import PreprocessSpec


# --- the golden probe -----------------------------------------------------------------------------
@dataclass(frozen=True)
class GoldenInputs:
    """The model input rows the golden is computed on, with what the encoded files bring along."""
    rows: Any  # [N, H, W, 3] float32: synthetic, the user's own (adopt), then the encoded files' rows
    encoded_arrays: Dict[str, Any]  # golden.npz's arrays of the encoded files, stage by stage
    encoded_section: dict  # the manifest's golden.encoded


@dataclass(frozen=True)
class Golden:
    """The golden probe as computed: golden.npz's arrays, and the manifest's golden section but for
    the file and its sha256 (known once it is written)."""
    arrays: Dict[str, Any]
    section: dict


def golden_inputs(spec: "PreprocessSpec", seed: int, count: int, own=None) -> GoldenInputs:
    """`count` synthetic inputs, the user's own preprocessed images, then the encoded JPEG/PNG goldens,
    which go through the decoder too (golden/encoded.py): their rows follow the others."""
    import numpy as np

    from ..golden import encoded
    from ..golden.compare import golden_inputs_for

    synthetic = golden_inputs_for(spec, seed, count)
    own_rows = [own] if own is not None and len(own) else []
    first_row = len(synthetic) + sum(len(rows) for rows in own_rows)
    encoded_arrays, encoded_rows, section = encoded.make(spec, seed, first_row=first_row)
    return GoldenInputs(np.concatenate([synthetic, *own_rows, encoded_rows]), encoded_arrays, section)


def record_golden(spec: "PreprocessSpec", seed: int, inputs: GoldenInputs, fetched: Dict[str, str],
                  values: Dict[str, Any], count: int, own_images: Optional[Sequence[str]] = None) -> Golden:
    """golden.npz's arrays and the golden section from the graph's outputs on the inputs (`fetched`:
    golden key -> tensor name, in the manifest's order; `values`: golden key -> array). The raw
    images and what this preprocessing makes of them travel too (inference re-runs its own
    preprocessing on them and must land on the same tensor), and the spec itself, to name edited
    fields. Numerics: this CPU's, where every step computes its golden."""
    import numpy as np

    from ..data.preprocess import preprocessing_probe, tolerances
    from ..runtime import effective_numerics
    from .manifest import GOLDEN_SPEC_KEY, encode_spec

    numerics = effective_numerics(0, 0, device="cpu")
    arrays = {GOLDEN_INPUT_KEY: inputs.rows.astype(np.float32),
              **{key: np.asarray(value, np.float32) for key, value in values.items()}}
    raw_images, raw_preprocessed = preprocessing_probe(spec, seed)
    arrays.update({GOLDEN_RAW_KEY: raw_images, GOLDEN_RAW_PREPROCESSED_KEY: raw_preprocessed,
                   GOLDEN_SPEC_KEY: encode_spec(spec.to_json()), **inputs.encoded_arrays})
    entries = [tensor_entry(key, name, arrays[key]) for key, name in fetched.items()]
    return Golden(arrays, golden_section(seed=seed, count=count, entries=entries, numerics=numerics,
                                         probe_tolerances=tolerances(spec), encoded=inputs.encoded_section,
                                         own_images=own_images))


def tensor_entry(key: str, name: str, array) -> dict:
    """A golden tensor's entry: its name in the graph, shape and tolerances, and its role."""
    from ..golden.compare import BLOCK_ROLE, OUTPUT_ROLE, tolerance_for

    abs_tol, rel_tol = tolerance_for(key, array)
    return {"key": key, "name": name, "shape": list(array.shape), "dtype": "float32", "abs_tol": abs_tol,
            "rel_tol": rel_tol, "role": OUTPUT_ROLE if key in (GOLDEN_LOGITS_KEY, GOLDEN_PROBABILITIES_KEY) else BLOCK_ROLE}


def golden_section(*, seed: int, count: int, entries: list, numerics: dict, probe_tolerances: dict, encoded: dict,
                   own_images: Optional[Sequence[str]] = None) -> dict:
    """The manifest's golden section but for the file and its sha256 (`own_images`: adopt's, even none)."""
    return {"seed": seed, "count": count, **({"own_images": list(own_images)} if own_images is not None else {}),
            "input_key": GOLDEN_INPUT_KEY, "tensors": entries, "computed_on": "CPU", "numerics": numerics,
            "preprocessing_probe": {"raw_key": GOLDEN_RAW_KEY, "expected_key": GOLDEN_RAW_PREPROCESSED_KEY,
                                    **probe_tolerances},
            "encoded": encoded}


# --- the directory ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelDirectory:
    """A model directory as freeze or adopt decided it; write() puts it on disk."""
    out: str
    model_bytes: bytes
    graph_def: Any
    golden: Golden
    model: dict  # the model section but for the file, its sha256 and size: architecture, num_classes, ...
    inputs: list
    outputs: list
    block_outputs: dict
    spec: "PreprocessSpec"
    labels: Sequence[str]
    labels_offset: int
    graph: dict  # the graph section but for the versions and op inventory: node counts, transforms, devices
    origin: dict  # where the model came from: {"training": ...} (freeze) or {"adopted": ...} (adopt)
    model_file: str = MODEL_FILE
    threads: Tuple[int, int] = (0, 0)  # recommended intra-/inter-op threads for inference (0: TF's choice)
    threads_measured_on: Optional[dict] = None  # the machine that measured them; infer applies them only on a like one
    op_libraries: Tuple[Tuple[str, dict], ...] = field(default=())  # (library path, extra fields) for ops/

    def write(self) -> dict:
        """golden.npz (then its sha256), ops/, the model, then manifest.json last. Returns the manifest."""
        from ..golden.budget import record_budget
        from ..runtime import describe, image_identity

        os.makedirs(self.out, exist_ok=True)
        golden_sha256 = write_golden(self.out, self.golden.arrays)
        custom_ops = [ship_op_library(self.out, path, extra) for path, extra in self.op_libraries]
        manifest = self.manifest(golden_sha256, custom_ops, {**describe(), "host": image_identity()})
        # The manifest is complete here: whatever else is recorded from the graph and the golden arrays
        # joins it now, before it is written.
        record_budget(manifest, self.graph_def, self.golden.arrays)  # golden.precision_budget: bf16 on this model
        write_model(self.out, self.model_file, self.model_bytes, manifest)
        return manifest

    def manifest(self, golden_sha256: str, custom_ops: list, environment: dict) -> dict:
        """manifest.json: the schema, every section."""
        return {
            "schema_version": MANIFEST_SCHEMA_VERSION,
            "format": MANIFEST_FORMAT,
            "model": {"file": self.model_file, "sha256": sha256_bytes(self.model_bytes),
                      "size_bytes": len(self.model_bytes), **self.model},
            "inputs": self.inputs,
            "outputs": self.outputs,
            "block_outputs": self.block_outputs,
            "preprocessing": self.spec.to_json(),
            "labels": list(self.labels),
            "labels_offset": self.labels_offset,
            "graph": {**graph_versions(self.graph_def), **self.graph},
            "golden": {"file": GOLDEN_FILE, "sha256": golden_sha256, **self.golden.section},
            **self.origin,
            "environment": environment,
            "custom_ops": custom_ops,
            "inference": {"intra_op_threads": self.threads[0], "inter_op_threads": self.threads[1],
                          **({"measured_on": self.threads_measured_on} if self.threads_measured_on else {})},
        }


def graph_versions(graph_def) -> dict:
    """The graph section's account of the graph itself: its GraphDef versions and op inventory."""
    return {"producer": graph_def.versions.producer, "min_consumer": graph_def.versions.min_consumer,
            "op_inventory": op_inventory(graph_def)}


def write_golden(out: str, arrays: Dict[str, Any]) -> str:
    """golden.npz (deterministic bytes); its sha256 as written."""
    path = os.path.join(out, GOLDEN_FILE)
    write_deterministic_npz(path, arrays)
    with open(path, "rb") as handle:
        return sha256_bytes(handle.read())


def ship_op_library(out: str, path: str, extra: Optional[dict] = None) -> dict:
    """A custom-op library copied into ops/, and its manifest entry (marker, sha256, size)."""
    from .oplibs import describe_library

    with open(path, "rb") as handle:
        library_bytes = handle.read()
    shipped = f"{OPS_DIR}/{os.path.basename(path)}"
    atomic_write_bytes(os.path.join(out, shipped), library_bytes)
    return {"library": shipped, **describe_library(library_bytes), **(extra or {})}


def write_model(out: str, model_file: str, model_bytes: bytes, manifest: Optional[dict]) -> None:
    """The model file, then the manifest last: a reader that sees the manifest sees a complete set."""
    atomic_write_bytes(os.path.join(out, model_file), model_bytes)
    if manifest is not None:
        atomic_write_json(os.path.join(out, MANIFEST_FILE), manifest)


def reexported(model_dir: str, source_file: str, out: str, graph_def, manifest: Optional[dict],
               transform: dict) -> bytes:
    """A model directory again around a re-exported graph (reexport): the manifest's model hash, graph
    versions, node counts and transforms updated, every other file copied as it is; without a manifest,
    the graph alone. The computation is unchanged, so the golden stays valid. Returns the graph's bytes."""
    data = graph_def.SerializeToString(deterministic=True)
    os.makedirs(out, exist_ok=True)
    if manifest is not None:
        manifest["model"].update(sha256=sha256_bytes(data), size_bytes=len(data))
        manifest.setdefault("graph", {}).update(graph_versions(graph_def))
        manifest["graph"].setdefault("node_counts", {})["after_reexport"] = graph_stats(graph_def)
        manifest["graph"].setdefault("transforms", {})["reexport"] = transform
        for name in sorted(os.listdir(model_dir)):
            source = os.path.join(model_dir, name)
            if name in (MODEL_FILE, MANIFEST_FILE, os.path.basename(source_file)) or name.startswith("."):
                continue
            if os.path.isdir(source):
                shutil.copytree(source, os.path.join(out, name), dirs_exist_ok=True)
            else:
                shutil.copyfile(source, os.path.join(out, name))
    write_model(out, MODEL_FILE, data, manifest)
    return data
