"""Hostile model directories and inputs, each refused with exit 2 and a line naming the file: a link out of
the model directory, model.pb or manifest.json linked to /dev/zero, a golden .npy header claiming 10^13
elements, a label id past the classes, `..` and absolute names in a manifest. The host's checks run through
the CLI and the fake engine (no container starts); the container's readers (scripts/incontainer) are
imported directly, those that need no numpy or TensorFlow at import."""

from __future__ import annotations

import io
import json
import struct
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from coldchain.cli import main
from coldchain.config import IMAGES
from coldchain.confine import read_manifest
from coldchain.contract import Exit
from coldchain.engine import ImageInfo, RunResult
from coldchain.environments.bases import ResolvedBase
from coldchain.environments.images import BuiltImage
from coldchain.errors import UsageError
from coldchain.steps.runner import Image
from conftest import ROOT
from fake_engine import FakeEngine

sys.path.insert(0, str(ROOT / "scripts"))
from incontainer.common import run_main  # noqa: E402
from incontainer.confine import Refused, check_npz  # noqa: E402
from incontainer.data.labels import read_labels_file  # noqa: E402
from incontainer.graph.graphdef import read_model_bytes  # noqa: E402
from incontainer.graph.manifest import load_golden_arrays, read_manifest as read_manifest_inside  # noqa: E402

IMAGE = BuiltImage(IMAGES["infer-cpu"], "t-infer:cpu", ImageInfo("sha256:abc", ("t-infer:cpu",),
                   {"io.coldchain.lock.sha256": "f00d"}, 1), ResolvedBase("b", "sha256:b", "local", "3.11.2"), False)
DEVICE = "/dev/zero"


def npy(shape: tuple, descr: str = "<f4", payload: bytes = b"") -> bytes:
    """A version 1.0 .npy stream whose header claims `shape`, followed by `payload` (numpy's own layout)."""
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode("latin1")
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload


def npz(arrays: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for key, data in arrays.items():
            archive.writestr(key + ".npy", data)
    return buffer.getvalue()


MANIFEST = {"model": {"file": "model.pb", "sha256": "ab" * 32},
            "inputs": [{"name": "input", "shape": [None, 2, 2, 3], "dtype": "float32"}],
            "golden": {"file": "golden.npz", "input_key": "input",
                       "tensors": [{"key": "logits", "name": "logits:0", "shape": [2, 5], "dtype": "float32"}]}}


@pytest.fixture
def model_dir(tmp_path) -> Path:
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "model.pb").write_bytes(b"graph")
    (directory / "golden.npz").write_bytes(npz({"input": npy((2, 2, 2, 3), payload=bytes(96)),
                                                "logits": npy((2, 5), payload=bytes(40))}))
    (directory / "manifest.json").write_text(json.dumps(MANIFEST))
    return directory


@pytest.fixture
def engine(monkeypatch):
    engine = FakeEngine()
    engine.run_handler = lambda spec: RunResult(0, '{"golden": {"ok": true}}\n', "")
    monkeypatch.setattr("coldchain.cli.base.connect", lambda: engine)
    monkeypatch.setattr("coldchain.steps.infer.ensure_images", lambda *args, **kwargs: IMAGE)
    monkeypatch.setattr("coldchain.steps.diagnose.image_for", lambda *args, **kwargs: Image.of(IMAGE))
    return engine


def run_cli(*args: str):
    return CliRunner().invoke(main, [args[0], "--project", str(ROOT), *args[1:]], catch_exceptions=False)


def refused_before_any_container(engine: FakeEngine, result, named: Path | str) -> None:
    assert result.exit_code == Exit.USAGE, result.output
    assert str(named) in result.output and "fix:" in result.output
    assert "Traceback" not in result.output
    assert engine.runs == []


def infer(model: Path, tmp_path: Path, *inputs: Path):
    return run_cli("infer", "--model", str(model), "--output", str(tmp_path / "p.jsonl"),
                   *[word for path in inputs or (tmp_path,) for word in ("--input", str(path))])


def edit_manifest(model_dir: Path, change) -> None:
    manifest = json.loads((model_dir / "manifest.json").read_text())
    change(manifest)
    (model_dir / "manifest.json").write_text(json.dumps(manifest))


def test_the_untouched_directory_passes_every_check(engine, model_dir, tmp_path):
    """The baseline the hostile cases below differ from by one thing each."""
    assert infer(model_dir, tmp_path).exit_code == 0
    check_npz((model_dir / "golden.npz").read_bytes(), "golden.npz", {"logits": ([2, 5], "float32")})


# --- 1. a link out of the model directory -----------------------------------------------------------------

def test_a_link_out_of_the_model_directory_is_refused(engine, model_dir, tmp_path):
    outside = tmp_path / "elsewhere.npz"
    outside.write_bytes((model_dir / "golden.npz").read_bytes())
    (model_dir / "golden.npz").unlink()
    (model_dir / "golden.npz").symlink_to(outside)
    for command in (("infer",), ("doctor",)):
        result = infer(model_dir, tmp_path) if command == ("infer",) else run_cli("doctor", str(model_dir))
        refused_before_any_container(engine, result, model_dir / "golden.npz")
        assert "outside" in result.output
    with pytest.raises(Refused, match="outside"):  # the container's reader too
        load_golden_arrays(str(model_dir), MANIFEST)


# --- 2. model.pb -> /dev/zero -----------------------------------------------------------------------------

def test_a_model_that_is_dev_zero_is_refused_not_read_forever(engine, model_dir, tmp_path):
    (model_dir / "model.pb").unlink()
    (model_dir / "model.pb").symlink_to(DEVICE)
    refused_before_any_container(engine, infer(model_dir, tmp_path), model_dir / "model.pb")
    refused_before_any_container(engine, run_cli("doctor", str(model_dir)), model_dir / "model.pb")
    with pytest.raises(Refused, match="not a regular file"):
        read_model_bytes(str(model_dir / "model.pb"), "copy it")
    assert run_main(lambda argv: read_model_bytes(str(model_dir / "model.pb"), "copy it"), []) == Exit.USAGE


# --- 3. manifest.json -> /dev/zero, on the host ---------------------------------------------------------

def test_a_manifest_that_is_dev_zero_is_refused_on_the_host(engine, model_dir, tmp_path):
    (model_dir / "manifest.json").unlink()
    (model_dir / "manifest.json").symlink_to(DEVICE)
    with pytest.raises(UsageError, match="not a regular file"):
        read_manifest(model_dir)
    refused_before_any_container(engine, run_cli("drift-plan", "--model", str(model_dir)), model_dir / "manifest.json")
    refused_before_any_container(engine, infer(model_dir, tmp_path), model_dir / "manifest.json")
    with pytest.raises(Refused):
        read_manifest_inside(str(model_dir))


def test_an_oversized_manifest_is_refused_by_its_size(model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules["coldchain._shared_confine"].LIMITS, "manifest", 10)
    with pytest.raises(UsageError, match="over the 10 a manifest file may hold"):
        read_manifest(model_dir)


# --- 4. a golden .npy header claiming 10^13 elements -----------------------------------------------------

def test_a_huge_npy_header_is_refused_before_anything_is_allocated(model_dir):
    hostile = npz({"input": npy((2, 2, 2, 3), payload=bytes(96)), "logits": npy((10**13,), payload=bytes(40))})
    (model_dir / "golden.npz").write_bytes(hostile)
    with pytest.raises(Refused, match=r"claims shape \[10000000000000\]"):
        load_golden_arrays(str(model_dir), MANIFEST)  # no numpy import, no MemoryError: the header is read first


def test_a_golden_array_whose_shape_or_dtype_is_not_the_manifests_is_refused():
    with pytest.raises(Refused, match=r"has shape \[3, 5\], the manifest records \[2, 5\]"):
        check_npz(npz({"logits": npy((3, 5), payload=bytes(60))}), "golden.npz", {"logits": ([2, 5], "float32")})
    with pytest.raises(Refused, match="the manifest records float32"):
        check_npz(npz({"logits": npy((2, 5), "<f8", bytes(80))}), "golden.npz", {"logits": ([2, 5], "float32")})
    with pytest.raises(Refused, match="not a plain numeric array"):
        check_npz(npz({"logits": npy((2,), "|O", bytes(16))}), "golden.npz", {})


# --- 5. a label id past the classes ----------------------------------------------------------------------

def test_a_huge_label_id_is_refused_not_built_into_a_list(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("0:cat\n999999999:x\n")
    with pytest.raises(Refused, match="class id 999999999, past the file's 2 lines"):
        read_labels_file(str(labels))
    labels.write_text("0:cat\n1:dog\n7:x\n")
    with pytest.raises(Refused, match="class id 7, past the model's 5 classes"):
        read_labels_file(str(labels), classes=5)
    labels.write_text("0:cat\n1:dog\n")
    assert read_labels_file(str(labels), classes=2) == ["cat", "dog"]


def test_labels_and_images_that_are_devices_are_refused_by_adopt_and_infer(engine, model_dir, tmp_path):
    refused_before_any_container(engine, infer(model_dir, tmp_path, Path(DEVICE)), DEVICE)
    graph = tmp_path / "frozen.pb"
    graph.write_bytes(b"graph")
    result = run_cli("adopt", str(graph), "--out", str(tmp_path / "adopted"), "--labels", DEVICE)
    refused_before_any_container(engine, result, DEVICE)
    with pytest.raises(Refused, match="not a regular file"):
        read_labels_file(DEVICE)


# --- 6. `..` in a name a manifest gives ------------------------------------------------------------------

def test_a_dotdot_name_in_the_manifest_is_refused(engine, model_dir, tmp_path):
    (tmp_path / "requirements.lock").write_text("tensorflow==2.14.1\n")
    edit_manifest(model_dir, lambda manifest: manifest.update(adopted={"environment": {"files": {
        "requirements.lock": "../requirements.lock", "requirements.in": "environment/requirements.in"}}}))
    for result in (run_cli("drift-plan", "--model", str(model_dir)), infer(model_dir, tmp_path)):
        refused_before_any_container(engine, result, model_dir / "manifest.json")
        assert "adopted.environment.files.requirements.lock '../requirements.lock' climbs out" in result.output
    edit_manifest(model_dir, lambda manifest: manifest.pop("adopted") and manifest["golden"].update(file="../x.npz"))
    with pytest.raises(Refused, match="golden.file '../x.npz' climbs out"):
        load_golden_arrays(str(model_dir), json.loads((model_dir / "manifest.json").read_text()))


# --- 7. an absolute name ---------------------------------------------------------------------------------

def test_an_absolute_name_in_the_manifest_is_refused(engine, model_dir, tmp_path):
    edit_manifest(model_dir, lambda manifest: manifest["golden"].update(file="/etc/passwd"))
    drift = run_cli("drift-test", "--model", str(model_dir), "--out", str(tmp_path / "drift"))
    for result in (infer(model_dir, tmp_path), run_cli("doctor", str(model_dir)), drift):
        refused_before_any_container(engine, result, model_dir / "manifest.json")
        assert "golden.file '/etc/passwd' is an absolute path" in result.output
    with pytest.raises(Refused, match="is an absolute path"):
        load_golden_arrays(str(model_dir), json.loads((model_dir / "manifest.json").read_text()))


def test_a_link_inside_the_model_directory_is_still_accepted(engine, model_dir, tmp_path):
    """Confinement refuses links out, not links: a copy tool that links within the directory is fine."""
    (model_dir / "real.npz").write_bytes((model_dir / "golden.npz").read_bytes())
    (model_dir / "golden.npz").unlink()
    (model_dir / "golden.npz").symlink_to("real.npz")
    assert infer(model_dir, tmp_path).exit_code == 0
