"""Hostile inputs refused inside the real containers, past the host's own checks (the steps are run
directly): a model.pb linked to /dev/zero, a golden .npy header claiming 10^13 elements, an image linked
out of its folder (infer, exit 2 naming the file), and a deeply nested protobuf (the doctor's
model-unreadable finding, exit 3, as for every unreadable graph). Each corrupts a copy of the session's
frozen model (tiny_chain)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from coldchain.errors import ContainerError
from coldchain.steps.diagnose import DoctorRequest, run_doctor
from coldchain.steps.pipeline import StepConfig, run_step
from test_hostile import npy

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]


def model_copy(tiny_chain: Path, tmp_path: Path) -> Path:
    model = tmp_path / "model"
    shutil.copytree(tiny_chain / "model", model)
    return model


def infer_refused(engine, project, run_id, kit_images, model: Path, inputs: Path, output: Path) -> str:
    step = StepConfig(name="infer", role="infer", module="infer", output=output,
                      inputs={"/model": model, "/inputs/0": inputs}, arguments=("--model", "/model", "/inputs/0"),
                      prefix=run_id, run_id=run_id)
    with pytest.raises(ContainerError) as caught:
        run_step(engine, project, step, kit_images["infer"])
    assert caught.value.container_exit == 2 and caught.value.exit_code == 2, caught.value
    assert "Traceback" not in caught.value.message and not output.exists()
    return caught.value.message


def inputs_with_a_picture(tiny_chain: Path, tmp_path: Path) -> Path:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    pictures = sorted((tiny_chain / "data").rglob("*"))
    picture = next(path for path in pictures if path.suffix in (".png", ".jpg", ".jpeg"))
    shutil.copyfile(picture, inputs / picture.name)
    (inputs / picture.name).chmod(0o644)
    return inputs


def hostile_golden(model: Path) -> None:
    """golden.npz with its logits header claiming 10^13 rows, the manifest's golden.sha256 made to match."""
    golden = model / "golden.npz"
    with zipfile.ZipFile(golden) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    members["logits.npy"] = npy((10**13, 3), payload=bytes(64))
    golden.unlink()
    with zipfile.ZipFile(golden, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    golden.chmod(0o644)
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["golden"]["sha256"] = hashlib.sha256(golden.read_bytes()).hexdigest()
    (model / "manifest.json").write_text(json.dumps(manifest))


def test_infer_in_the_container_refuses_hostile_files(docker_engine, project, run_id, kit_images, tiny_chain, tmp_path):
    inputs = inputs_with_a_picture(tiny_chain, tmp_path)
    output = tmp_path / "predictions.jsonl"
    zero = model_copy(tiny_chain, tmp_path / "zero")
    (zero / "model.pb").unlink()
    (zero / "model.pb").symlink_to("/dev/zero")
    message = infer_refused(docker_engine, project, run_id, kit_images, zero, inputs, output)
    assert str(zero / "model.pb") in message and "not a regular file" in message

    huge = model_copy(tiny_chain, tmp_path / "huge")
    hostile_golden(huge)
    message = infer_refused(docker_engine, project, run_id, kit_images, huge, inputs, output)
    assert str(huge / "golden.npz") in message and "claims shape [10000000000000, 3]" in message

    os.symlink("/etc/passwd", inputs / "escape.png")
    message = infer_refused(docker_engine, project, run_id, kit_images, tiny_chain / "model", inputs, output)
    assert str(inputs / "escape.png") in message and "outside" in message


def nested_graph(depth: int) -> bytes:
    """A GraphDef whose one node's attr nests AttrValue.func -> NameAttrList.attr -> AttrValue `depth` deep."""
    def field(number: int, data: bytes) -> bytes:
        return _varint(number << 3 | 2) + _varint(len(data)) + data

    value = b""
    for _ in range(depth):
        entry = field(1, b"a") + field(2, value)  # map<string, AttrValue> entry
        value = field(10, field(1, b"f") + field(2, entry))  # AttrValue.func = NameAttrList(name, attr)
    node = field(1, b"n") + field(2, b"Const") + field(5, field(1, b"value") + field(2, value))
    return field(1, node)


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        low, number = number & 0x7F, number >> 7
        out.append(low | (0x80 if number else 0))
        if not number:
            return bytes(out)


def test_the_doctor_names_a_deeply_nested_protobuf_unreadable(docker_engine, project, run_id, kit_images, tmp_path):
    folder = tmp_path / "nested"
    folder.mkdir(mode=0o755)
    (folder / "model.pb").write_bytes(nested_graph(2000))
    (folder / "model.pb").chmod(0o644)
    request = DoctorRequest(model=folder / "model.pb", prefix=run_id, as_json=True)
    code, text = run_doctor(docker_engine, project, request)
    diagnosis = json.loads(text)
    assert code == 3 and diagnosis["outcome"] == "model-unreadable"
    assert str(folder / "model.pb") in diagnosis["findings"][0]["cause"]
