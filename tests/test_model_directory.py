"""The model directory is written in one place (scripts/incontainer/graph/model_directory.py): the
manifest's schema, section by section, is the one freeze and adopt wrote when each assembled its own
(the key sets below are theirs, read from manifests they wrote), reexport rewrites a directory keeping
its other files, and the manifest is written last. Plain data: this runs on the host, without numpy
or TensorFlow, on fakes of the graph and the golden."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import pytest

from coldchain import contract
from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from incontainer.graph import model_directory  # noqa: E402

TOP_LEVEL = {"schema_version", "format", "model", "inputs", "outputs", "block_outputs", "preprocessing", "labels",
             "labels_offset", "graph", "golden", "environment", "custom_ops", "inference"}
GOLDEN = {"file", "sha256", "seed", "count", "input_key", "tensors", "computed_on", "numerics", "preprocessing_probe",
          "encoded"}
PREPROCESSING_PROBE = {"raw_key", "expected_key", "abs_tol", "mean_abs_tol"}
FREEZE = {"top": TOP_LEVEL | {"training"}, "model": {"file", "sha256", "size_bytes", "architecture", "num_classes"},
          "golden": GOLDEN, "graph": {"producer", "min_consumer", "op_inventory", "node_counts", "transforms"}}
ADOPT = {"top": TOP_LEVEL | {"adopted"},
         "model": {"file", "sha256", "size_bytes", "architecture", "num_classes", "encoding"},
         "golden": GOLDEN | {"own_images"}, "graph": {"producer", "min_consumer", "op_inventory", "node_counts", "devices"}}


class FakeGraphDef:
    def __init__(self, data: bytes = b"graph bytes"):
        self.node = [SimpleNamespace(name="input", op="Placeholder", attr={"dtype": 1, "shape": 2}, device=""),
                     SimpleNamespace(name="logits", op="MatMul", attr={"T": 1}, device="/device:CPU:0")]
        self.versions = SimpleNamespace(producer=1205, min_consumer=12)
        self.library = SimpleNamespace(function=[])
        self.data = data

    def SerializeToString(self, deterministic: bool = False) -> bytes:
        return self.data


def golden(own_images=None) -> model_directory.Golden:
    entries = [{"key": "logits", "name": "logits:0", "shape": [10, 5], "dtype": "float32", "abs_tol": 0.01,
                "rel_tol": 0.001, "role": "output"}]
    section = model_directory.golden_section(seed=0, count=4, entries=entries, numerics={"device": "cpu"},
                                             probe_tolerances={"abs_tol": 0.02, "mean_abs_tol": 0.005},
                                             encoded={"files": [], "decoder": {}, "max_levels": 2.0,
                                                      "mean_levels": 0.5}, own_images=own_images)
    return model_directory.Golden(arrays={}, section=section)


def directory(kind: str, out: str = "out") -> model_directory.ModelDirectory:
    graph_def = FakeGraphDef()
    common = dict(out=out, model_bytes=b"model bytes", graph_def=graph_def, inputs=[{"name": "input"}],
                  outputs=[{"name": "logits", "role": "logits"}], block_outputs={},
                  spec=SimpleNamespace(to_json=lambda: {"preset": "vgg"}), labels=("a", "b"), labels_offset=0)
    if kind == "freeze":
        return model_directory.ModelDirectory(
            **common, golden=golden(), model={"architecture": "resnet_v1_50", "num_classes": 2},
            graph={"node_counts": {}, "transforms": {"devices_cleared": True}}, origin={"training": {"steps": 1}},
            threads=(2, 1))
    return model_directory.ModelDirectory(
        **common, golden=golden(own_images=[]), model_file="model.pbtxt",
        model={"architecture": "unknown", "num_classes": 2, "encoding": "text"},
        graph={"node_counts": {"adopted": {}}, "devices": ["/device:CPU:0"]}, origin={"adopted": {"reference": "x"}})


@pytest.mark.parametrize("kind, schema", [("freeze", FREEZE), ("adopt", ADOPT)])
def test_the_manifest_has_the_sections_freeze_and_adopt_always_wrote(kind, schema):
    manifest = directory(kind).manifest("0" * 64, [], {"tensorflow": "2.14.1"})
    assert set(manifest) == schema["top"]
    for section in ("model", "golden", "graph"):
        assert set(manifest[section]) == schema[section], section
    assert set(manifest["golden"]["preprocessing_probe"]) == PREPROCESSING_PROBE
    assert set(manifest["inference"]) == {"intra_op_threads", "inter_op_threads"}
    assert manifest["schema_version"] == contract.MANIFEST_SCHEMA_VERSION
    assert manifest["golden"]["file"] == contract.GOLDEN_FILE and manifest["golden"]["sha256"] == "0" * 64
    assert manifest["golden"]["input_key"] == contract.GOLDEN_INPUT_KEY
    assert manifest["labels"] == ["a", "b"] and manifest["preprocessing"] == {"preset": "vgg"}
    assert manifest["graph"]["op_inventory"] == {"MatMul": ["T"], "Placeholder": ["dtype", "shape"]}
    json.dumps(manifest, allow_nan=False)  # what atomic_write_json requires


def test_freeze_records_where_its_thread_setting_was_measured():
    """infer applies the setting only on a machine like this one (coldchain/steps/threads.py reads it)."""
    from dataclasses import replace

    machine = {"cores": 2, "cpu_class": "avx2", "cpu_flags": ["avx", "avx2", "fma"]}
    manifest = replace(directory("freeze"), threads_measured_on=machine).manifest("0" * 64, [], {})
    assert manifest["inference"] == {"intra_op_threads": 2, "inter_op_threads": 1, "measured_on": machine}


def test_adopt_records_the_users_own_golden_images_even_when_there_are_none():
    assert directory("adopt").manifest("0" * 64, [], {})["golden"]["own_images"] == []
    assert "own_images" not in directory("freeze").manifest("0" * 64, [], {})["golden"]


def test_an_op_library_ships_in_ops_with_what_its_marker_says(tmp_path):
    library = tmp_path / "libtemp.so"
    library.write_bytes(b"\x7fELF...coldchain-op-library:tensorflow=2.14.1;ops=ColdchainTemperatureScale;...")
    entry = model_directory.ship_op_library(str(tmp_path / "model"), str(library), {"loaded_from": str(library)})
    shipped = f"{contract.OPS_DIR}/libtemp.so"
    assert (tmp_path / "model" / shipped).read_bytes() == library.read_bytes()
    assert entry["library"] == shipped and entry["loaded_from"] == str(library)
    assert entry["compiled_against_tensorflow"] == "2.14.1" and entry["ops"] == ["ColdchainTemperatureScale"]
    assert set(entry) == {"library", "sha256", "size_bytes", "compiled_against_tensorflow", "ops", "loaded_from"}


def test_the_manifest_is_written_after_the_model(tmp_path, monkeypatch):
    written = []
    monkeypatch.setattr(model_directory, "atomic_write_bytes", lambda path, data: written.append(path))
    monkeypatch.setattr(model_directory, "atomic_write_json", lambda path, value: written.append(path))
    model_directory.write_model(str(tmp_path), contract.MODEL_FILE, b"model", {"schema_version": 1})
    assert written == [str(tmp_path / contract.MODEL_FILE), str(tmp_path / contract.MANIFEST_FILE)]


def test_reexport_keeps_the_other_files_and_updates_what_the_graph_changed(tmp_path):
    source, out = tmp_path / "model", tmp_path / "out"
    (source / contract.OPS_DIR).mkdir(parents=True)
    (source / contract.OPS_DIR / "lib.so").write_bytes(b"library")
    (source / contract.GOLDEN_FILE).write_bytes(b"golden")
    (source / contract.MODEL_FILE).write_bytes(b"old graph")
    (source / ".partial").write_bytes(b"")
    manifest = {"model": {"file": contract.MODEL_FILE, "sha256": "old", "size_bytes": 9}, "golden": {"sha256": "g"}}
    data = model_directory.reexported(str(source), str(source / contract.MODEL_FILE), str(out), FakeGraphDef(b"new"),
                                      manifest, {"strip_default_attrs": True})
    assert data == b"new" and (out / contract.MODEL_FILE).read_bytes() == b"new"
    assert sorted(path.name for path in out.iterdir()) == sorted([contract.OPS_DIR, contract.GOLDEN_FILE,
                                                                  contract.MODEL_FILE, contract.MANIFEST_FILE])
    written = json.loads((out / contract.MANIFEST_FILE).read_text())
    assert written["model"]["size_bytes"] == 3 and written["model"]["sha256"] != "old"
    assert written["graph"]["producer"] == 1205 and written["graph"]["transforms"] == {
        "reexport": {"strip_default_attrs": True}}
    assert written["graph"]["node_counts"]["after_reexport"]["nodes"] == 2
    assert written["golden"] == {"sha256": "g"}


def test_reexport_of_a_bare_graph_writes_the_graph_alone(tmp_path):
    source = tmp_path / "frozen.pb"
    source.write_bytes(b"graph")
    model_directory.reexported(str(tmp_path), str(source), str(tmp_path / "out"), FakeGraphDef(b"new"), None, {})
    assert [path.name for path in (tmp_path / "out").iterdir()] == [contract.MODEL_FILE]
