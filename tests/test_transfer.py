"""Images across CI jobs without a shared daemon, against the fake engine: an archive or a registry
brings them, and the receiving job uses only images built from its own checkout's inputs."""

from __future__ import annotations

import json

import pytest

from coldchain.environments.matrix import load_matrix
from coldchain.drift.transfer import image_names, load, pull, push, read_index, resolve, save
from coldchain.environments.images import BuildOptions
from coldchain.errors import ImageNotAvailable, UsageError
from conftest import TWO_ENV_MATRIX as MATRIX
from fake_engine import FakeEngine



@pytest.fixture
def matrix(tiny_project):
    path = tiny_project.root / "matrix.toml"
    path.write_text(MATRIX)
    return load_matrix(path)


def sender(tiny_project, matrix):
    engine = FakeEngine(registry=True)
    names = image_names(matrix, list(matrix.cases), merge=True)
    return engine, names, resolve(engine, tiny_project, matrix, names, BuildOptions())


def test_an_archive_brings_the_images_and_their_base_and_each_is_checked(tiny_project, matrix, tmp_path):
    engine, names, built = sender(tiny_project, matrix)
    assert names == ["infer-cpu"]
    result = save(engine, built, tmp_path / "images.tar")
    assert result.bytes and not list(tmp_path.glob(".images.tar.partial-*"))
    saved = [ref for ref, _, _ in json.loads((tmp_path / "images.tar").read_text())]
    assert saved == ["coldchain-infer:cpu", "python:3.11-slim-bookworm"]

    receiver = FakeEngine(registry=False)  # another daemon: nothing built, no registry
    got = load(receiver, tiny_project, matrix, names, tmp_path / "images.tar", BuildOptions(allow_pull=False))
    assert [image["tag"] for image in got.images] == ["coldchain-infer:cpu"] and receiver.builds == []


def test_an_archive_from_another_commit_is_refused_naming_what_differs(tiny_project, matrix, tmp_path):
    engine, names, built = sender(tiny_project, matrix)
    save(engine, built, tmp_path / "images.tar")
    (tiny_project.root / "scripts/incontainer/edited.py").write_text("# this job's checkout is newer\n")
    receiver = FakeEngine(registry=False)
    with pytest.raises(ImageNotAvailable) as caught:
        load(receiver, tiny_project, matrix, names, tmp_path / "images.tar", BuildOptions(allow_pull=False))
    assert str(tmp_path / "images.tar") in caught.value.message
    assert "scripts/incontainer" in caught.value.message and receiver.builds == []


def test_an_image_the_archive_lacks_is_named_not_built(tiny_project, matrix, tmp_path):
    engine, names, built = sender(tiny_project, matrix)
    save(engine, built, tmp_path / "images.tar")
    receiver = FakeEngine(registry=False)
    with pytest.raises(ImageNotAvailable, match="coldchain-train:cpu: no image"):
        load(receiver, tiny_project, matrix, ["infer-cpu", "train-cpu"], tmp_path / "images.tar",
             BuildOptions(allow_pull=False))
    assert receiver.builds == []
    with pytest.raises(UsageError, match="no such image archive"):
        load(receiver, tiny_project, matrix, names, tmp_path / "missing.tar", BuildOptions())


def test_push_then_pull_by_digest(tiny_project, matrix, tmp_path):
    engine, names, built = sender(tiny_project, matrix)
    push(engine, built, "localhost:5000/", tmp_path / "images.json")
    entries = read_index(tmp_path / "images.json")
    assert set(entries) == {"coldchain-infer:cpu", "python:3.11-slim-bookworm"}
    assert all(entry["ref"].startswith("localhost:5000/") and "@sha256:" in entry["ref"] for entry in entries.values())

    receiver = FakeEngine(registry=False)
    receiver.registry_images = engine.registry_images  # the same registry, another daemon
    got = pull(receiver, tiny_project, matrix, names, tmp_path / "images.json", BuildOptions(allow_pull=False))
    assert got.images[0]["id"] == built[0].info.id and receiver.builds == []


def test_a_damaged_index_is_refused_naming_the_file(tmp_path):
    (tmp_path / "images.json").write_text('{"format": 1, "images": {"a:b": {"ref": "registry/a:b"}}}')
    with pytest.raises(UsageError, match="images.json is not an image index"):
        read_index(tmp_path / "images.json")
