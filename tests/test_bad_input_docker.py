"""Bad input that must get one clear message naming the file, a non-zero exit and no output:
images (zero bytes, a decompression bomb, a symlink loop) and things that are not frozen graphs
(empty, random bytes, a SavedModel, a checkpoint, a graph over protobuf's 2 GiB limit)."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import pytest

from coldchain.steps.diagnose import DoctorRequest, run_doctor
from coldchain.errors import ContainerError
from coldchain.steps.pipeline import StepConfig, run_step

pytestmark = pytest.mark.docker


def png_claiming(width: int, height: int) -> bytes:
    """A well-formed PNG header for a huge image: Pillow must refuse it before allocating anything."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def infer(engine, project, run_id, kit_images, model: Path, inputs: Path, output: Path):
    step = StepConfig(name="infer", role="infer", module="infer", output=output,
                      inputs={"/model": model, "/inputs/0": inputs}, arguments=("--model", "/model", "/inputs/0"),
                      prefix=run_id, run_id=run_id)
    return run_step(engine, project, step, kit_images["infer"])


@pytest.mark.parametrize("name, make, expected", [
    ("empty.png", lambda path: path.write_bytes(b""), "not an image"),
    ("bomb.png", lambda path: path.write_bytes(png_claiming(60000, 60000)), "too large to decode safely"),
    ("loop.png", lambda path: os.symlink(path.name, path), "cannot read image"),
])
def test_bad_images_are_named_and_nothing_is_written(docker_engine, project, run_id, kit_images, tiny_chain, tmp_path,
                                                     name, make, expected):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    make(inputs / name)
    output = tmp_path / "predictions.jsonl"
    with pytest.raises(ContainerError) as caught:
        infer(docker_engine, project, run_id, kit_images, tiny_chain / "model", inputs, output)
    assert caught.value.container_exit == 2
    assert expected in caught.value.message and str(inputs / name) in caught.value.message
    assert not output.exists() and [p.name for p in tmp_path.iterdir()] == ["inputs"]


def doctor_error(engine, project, run_id, model: Path) -> str:
    with pytest.raises(ContainerError) as caught:
        run_doctor(engine, project, DoctorRequest(model=model, prefix=run_id, as_json=True))
    assert caught.value.container_exit == 2
    return caught.value.message


def test_things_that_are_not_frozen_graphs(docker_engine, project, run_id, kit_images, tiny_chain, tmp_path):
    saved_model = tmp_path / "saved_model"
    (saved_model / "variables").mkdir(parents=True)
    (saved_model / "saved_model.pb").write_bytes(os.urandom(64))
    message = doctor_error(docker_engine, project, run_id, saved_model)
    assert "SavedModel directory" in message and str(saved_model) in message and "coldchain freeze" in message
    message = doctor_error(docker_engine, project, run_id, tiny_chain / "run")
    assert "training checkpoint" in message and "coldchain freeze --run" in message
    huge = tmp_path / "huge"
    huge.mkdir()
    with open(huge / "model.pb", "wb") as handle:  # sparse: 2.1 GiB on paper, nothing on disk
        handle.truncate(2**31 + 2**26)
    message = doctor_error(docker_engine, project, run_id, huge / "model.pb")
    assert "over protobuf's 2 GiB limit" in message and "SavedModel" in message


@pytest.mark.parametrize("content", [b"", os.urandom(4096)], ids=["empty", "random-bytes"])
def test_empty_or_random_model_file_is_unreadable(docker_engine, project, run_id, kit_images, tmp_path, content):
    model = tmp_path / "model"
    model.mkdir(mode=0o755)
    (model / "model.pb").write_bytes(content)
    (model / "model.pb").chmod(0o644)
    code, text = run_doctor(docker_engine, project, DoctorRequest(model=model / "model.pb", prefix=run_id, as_json=True))
    diagnosis = json.loads(text)
    assert code == 3 and diagnosis["outcome"] == "model-unreadable"
    cause = diagnosis["findings"][0]["cause"]
    assert "not a valid frozen GraphDef" in cause or "empty GraphDef" in cause


def test_an_unreadable_model_directory_says_how_to_fix_it(docker_engine, project, run_id, kit_images, tmp_path):
    hidden = tmp_path / "private"
    hidden.mkdir(mode=0o700)
    (hidden / "model.pb").write_bytes(b"x")
    if os.geteuid() != 0:
        # As anyone but root the container runs as the caller, who can read their own directory: it is
        # read, and what it holds (one byte) is diagnosed for what it is.
        code, text = run_doctor(docker_engine, project, DoctorRequest(model=hidden, prefix=run_id, as_json=True))
        assert code == 3 and json.loads(text)["outcome"] == "model-unreadable"
        return
    message = doctor_error(docker_engine, project, run_id, hidden)
    assert "permission denied" in message and "chmod o+rx" in message and str(hidden) in message


def _train(engine, project, run_id, kit_images, data: Path, out: Path):
    step = StepConfig(name="train", role="train", module="train", output=out, inputs={"/data": data},
                      arguments=("--data", "/data", "--max-steps", "1", "--image-size", "32"), prefix=run_id, run_id=run_id)
    return run_step(engine, project, step, kit_images["train"])


@pytest.mark.parametrize("layout, expected", [
    ("one-class", "only one class (circle)"),
    ("empty-class", "unphotographed has no images"),
    ("mismatched-labels", "that are not in"),
])
def test_unusable_datasets_are_refused(docker_engine, project, run_id, kit_images, tiny_chain, tmp_path, layout, expected):
    import shutil

    data = tmp_path / "data"
    source = tiny_chain / "data"
    classes = sorted(p.name for p in (source / "train").iterdir() if p.is_dir())
    if layout == "one-class":
        shutil.copytree(source / "train" / classes[0], data / "circle")
    elif layout == "empty-class":
        shutil.copytree(source / "train" / classes[0], data / classes[0])
        shutil.copytree(source / "train" / classes[1], data / classes[1])
        (data / "unphotographed").mkdir()
    else:
        # the held-out split names a class the training split does not have
        for split, names in (("train", classes[:2]), ("val", [classes[0], "hexagon"])):
            for name in names:
                shutil.copytree(source / "train" / classes[0], data / split / name)
    with pytest.raises(ContainerError) as caught:
        _train(docker_engine, project, run_id, kit_images, data, tmp_path / "run")
    assert caught.value.container_exit == 2
    assert expected in caught.value.message and str(data) in caught.value.message
    assert not (tmp_path / "run").exists()
