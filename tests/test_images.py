"""build_image and resolve_base against the fake engine: which base, which args, which labels."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from coldchain.environments.bases import resolve_base
from coldchain.config import BASES, IMAGES
from coldchain.engine import DiskSpace, ImageInfo
from coldchain.errors import BaseImageError, BuildError
from coldchain.environments.images import BuildOptions, build_image, ensure_image, remove_superseded
from fake_engine import FakeEngine



def test_local_base_is_built_when_no_registry_answers(tiny_project, monkeypatch):
    engine = FakeEngine(registry=False)
    monkeypatch.setattr("coldchain.environments.bases.build_local_base",
                        lambda engine, project, spec: engine.import_rootfs(project.root, spec.local_image, []))
    resolved = resolve_base(engine, tiny_project, BASES["bookworm"])
    assert (resolved.ref, resolved.source) == ("coldchain-base:bookworm", "local")
    assert engine.imports == ["coldchain-base:bookworm"]


def test_official_base_is_used_when_the_registry_answers(tiny_project):
    resolved = resolve_base(FakeEngine(registry=True), tiny_project, BASES["bookworm"])
    assert (resolved.ref, resolved.source) == ("python:3.11-slim-bookworm", "official")


def test_base_with_the_wrong_python_is_refused(tiny_project):
    engine = FakeEngine(registry=True, python_version="3.12.1")
    with pytest.raises(BaseImageError, match="runs Python 3.12.1"):
        resolve_base(engine, tiny_project, BASES["bookworm"])


def test_build_passes_lock_pins_and_labels(tiny_project):
    engine = FakeEngine(registry=True)
    built = build_image(engine, tiny_project, IMAGES["infer-cpu"], BuildOptions(prefix="t"))
    call = engine.builds[0]
    assert call["tag"] == "t-infer:cpu" and call["dockerfile"] == "Dockerfile.infer"
    assert call["buildargs"]["EXPECT_TENSORFLOW"] == "2.14.1"
    assert call["buildargs"]["LOCK"] == "requirements-infer.lock"
    labels = built.info.labels
    lock_sha = hashlib.sha256(tiny_project.path("requirements-infer.lock").read_bytes()).hexdigest()
    assert labels["io.coldchain.lock.sha256"] == lock_sha
    assert labels["io.coldchain.python.version"] == "3.11.2"
    assert labels["io.coldchain.device"] == "cpu"
    assert labels["org.opencontainers.image.base.digest"] == built.base.image_id
    assert b"wheels/numpy-1.26.4" in call["context"]


def test_ensure_image_builds_the_one_image_once_then_finds_it(tiny_project):
    engine = FakeEngine(registry=True)
    first = ensure_image(engine, tiny_project, IMAGES["infer-cpu"], BuildOptions(prefix="t"))
    again = ensure_image(engine, tiny_project, IMAGES["infer-cpu"], BuildOptions(prefix="t"))
    assert (first.tag, first.reused) == ("t-infer:cpu", False)
    assert (again.tag, again.reused, again.info.id) == ("t-infer:cpu", True, first.info.id)
    assert [call["tag"] for call in engine.builds] == ["t-infer:cpu"]


def test_unchanged_inputs_reuse_the_image(tiny_project):
    engine = FakeEngine(registry=True)
    build_image(engine, tiny_project, IMAGES["train-cpu"], BuildOptions())
    again = build_image(engine, tiny_project, IMAGES["train-cpu"], BuildOptions())
    assert again.reused and len(engine.builds) == 1
    build_image(engine, tiny_project, IMAGES["train-cpu"], BuildOptions(force=True))
    assert len(engine.builds) == 2


def test_an_image_of_the_same_inputs_is_tagged_instead_of_rebuilt(tiny_project, monkeypatch):
    """A test session's prefix or a new commit finds the image another prefix built from the same inputs."""
    engine = FakeEngine(registry=True)
    first = build_image(engine, tiny_project, IMAGES["infer-cpu"], BuildOptions(prefix="kit"))
    monkeypatch.setattr("coldchain.environments.images.git_revision", lambda root: "f" * 40)
    other = build_image(engine, tiny_project, IMAGES["infer-cpu"], BuildOptions(prefix="cctest-1"))
    assert other.reused and len(engine.builds) == 1
    assert engine.images["cctest-1-infer:cpu"].id == first.info.id
    # A changed input is a different image: the lock edited, or another role's Dockerfile.
    lock = tiny_project.path("requirements-infer.lock")
    lock.write_text(lock.read_text() + "# an edit\n")
    build_image(engine, tiny_project, IMAGES["infer-cpu"], BuildOptions(prefix="cctest-2"))
    assert len(engine.builds) == 2
    build_image(engine, tiny_project, IMAGES["train-cpu"], BuildOptions(prefix="cctest-1"))
    assert len(engine.builds) == 3


def test_install_stage_is_removed_unless_kept(tiny_project):
    engine = FakeEngine(registry=True)
    build_image(engine, tiny_project, IMAGES["infer-cpu"], BuildOptions(prefix="a"))
    build_image(engine, tiny_project, IMAGES["train-cpu"], BuildOptions(prefix="a", keep_stages=True))
    assert [call["keep_stages"] for call in engine.builds] == [False, True]


def test_failed_build_is_not_tagged_and_explains_hash_mismatch(tiny_project):
    engine = FakeEngine(registry=True, fail_build="ERROR: THESE PACKAGES DO NOT MATCH THE HASHES\n    six==1.17.0 from ...")
    with pytest.raises(BuildError) as caught:
        build_image(engine, tiny_project, IMAGES["train-cpu"], BuildOptions(prefix="t"))
    assert "t-train:cpu" not in engine.images
    assert "make lock" in caught.value.fix



def test_a_local_base_is_used_without_asking_a_registry_again(tiny_project, monkeypatch):
    engine = FakeEngine(registry=False)
    monkeypatch.setattr("coldchain.environments.bases.build_local_base",
                        lambda engine, project, spec: engine.import_rootfs(project.root, spec.local_image, []))
    resolve_base(engine, tiny_project, BASES["bookworm"])
    engine.registry = True  # a registry that answers now is not asked: the local base stays
    pulls = list(engine.pulls)
    resolved = resolve_base(engine, tiny_project, BASES["bookworm"])
    assert (resolved.ref, resolved.source) == ("coldchain-base:bookworm", "local")
    assert engine.pulls == pulls and engine.imports == ["coldchain-base:bookworm"]


def test_prune_removes_the_kits_nameless_images_that_no_container_uses(tiny_project):
    """Every edit of scripts/ or a lock leaves the image it replaced nameless (2 to 5 GB). A build does
    not remove it (another checkout's job may be about to run it by id); 'make prune' does."""
    engine = FakeEngine(registry=True)
    first = build_image(engine, tiny_project, IMAGES["infer-cpu"], BuildOptions(prefix="kit"))
    (tiny_project.root / "scripts/incontainer/edited.py").write_text("# an edit\n")
    second = build_image(engine, tiny_project, IMAGES["infer-cpu"], BuildOptions(prefix="kit"))
    assert second.info.id != first.info.id and engine.removed == []
    in_use = build_image(engine, tiny_project, IMAGES["train-cpu"], BuildOptions(prefix="kit"))
    (tiny_project.root / "scripts/incontainer/edited.py").write_text("# another edit\n")
    build_image(engine, tiny_project, IMAGES["train-cpu"], BuildOptions(prefix="kit"))
    engine.in_use.add(in_use.info.id)  # a stopped container still holds it
    engine.images["theirs"] = ImageInfo("sha256:theirs", (), {}, 1)  # not the kit's
    assert remove_superseded(engine) == (1, first.info.size)
    assert engine.removed == [first.info.id] and "theirs" in engine.images
    assert engine.inspect_image("kit-infer:cpu").id == second.info.id


def test_a_build_short_of_disk_is_warned_about_before_it_starts(tiny_project, caplog):
    engine = FakeEngine(registry=True)
    engine.disk = DiskSpace("/var/lib/docker", 10)
    build_image(engine, tiny_project, IMAGES["infer-cpu"], BuildOptions(prefix="kit"))
    assert "may need about" in caplog.text and "/var/lib/docker" in caplog.text
    caplog.clear()
    engine.disk = DiskSpace("/var/lib/docker", 10**12)
    build_image(engine, tiny_project, IMAGES["train-cpu"], BuildOptions(prefix="kit"))
    assert "may need about" not in caplog.text


def test_an_image_of_the_same_sources_is_found_without_fetching_or_hashing_a_wheel(tiny_project, monkeypatch):
    """A CI job that loaded or pulled its images has no wheelhouse; finding them must not need one."""
    engine = FakeEngine(registry=True)
    first = build_image(engine, tiny_project, IMAGES["infer-cpu"], BuildOptions(prefix="kit"))
    shutil.rmtree(tiny_project.wheelhouse)
    monkeypatch.setattr("coldchain.environments.wheelhouse.Wheelhouse.ensure",
                        lambda *args: pytest.fail("the wheelhouse was asked for"))
    again = build_image(engine, tiny_project, IMAGES["infer-cpu"], BuildOptions(prefix="shard-1"))
    assert again.reused and again.info.id == first.info.id and len(engine.builds) == 1
    # An edited script is another source: that one is built (and needs its wheels).
    (tiny_project.root / "scripts/incontainer/edited.py").write_text("# an edit\n")
    with pytest.raises(pytest.fail.Exception, match="wheelhouse was asked"):
        build_image(engine, tiny_project, IMAGES["infer-cpu"], BuildOptions(prefix="shard-1"))
