"""The arm64 environment on the host's side: its lock (aarch64 wheels, hashed), its base and wheelhouse
for aarch64, where its lock is resolved, and the image labels and build platform. No Docker."""

from __future__ import annotations

import hashlib
import json
import platform
import tarfile
from pathlib import Path

import pytest

from coldchain.config import BASES, LOCKS
from coldchain.environments import emulation, resolver
from coldchain.environments.locks import check_all, parse_lock
from coldchain.environments.wheelhouse import Wheelhouse, platform_args

pytestmark = pytest.mark.timeout(60)
ARM64 = BASES["bookworm-arm64"]


def test_the_arm64_base_is_bookworm_for_linux_arm64():
    assert (ARM64.suite, ARM64.python, ARM64.platform, ARM64.arch, ARM64.machine) == (
        "bookworm", "3.11", "linux/arm64", "arm64", "aarch64")
    assert ARM64.local_image == "coldchain-base:bookworm-arm64"
    assert BASES["bookworm"].platform == "linux/amd64" and BASES["bookworm"].machine == "x86_64"


def test_the_arm64_lock_is_the_inference_input_resolved_on_the_arm64_base():
    spec = LOCKS["drift-arm64"]
    assert spec.source == LOCKS["infer-cpu"].source == "requirements-infer.in"
    assert spec.base == "bookworm-arm64" and "infer-cpu" in spec.agrees_with


def test_the_arm64_lock_pins_the_aarch64_tensorflow_with_hashes(project):
    """tensorflow 2.14.1 on aarch64 is a shim over tensorflow-cpu-aws: a lock resolved for x86-64 never
    pins it, one resolved under an aarch64 Python must, at the same version, with its wheels' hashes."""
    lock = check_all(project, ["drift-arm64"])["drift-arm64"]
    infer = parse_lock(project.path(LOCKS["infer-cpu"].lock))
    assert lock.version("tensorflow") == infer.version("tensorflow")
    assert lock.version("tensorflow-cpu-aws") == lock.version("tensorflow")
    assert infer.version("tensorflow-cpu-aws") is None
    assert all(pin.hashes for pin in lock.pins.values())
    assert all(hash_.startswith("sha256:") and len(hash_) == 71 for hash_ in lock.pins["tensorflow-cpu-aws"].hashes)
    shared = set(lock.pins) & set(infer.pins)
    assert {name for name in shared if lock.version(name) != infer.version(name)} == set()


def test_platform_args_for_aarch64_name_only_aarch64_tags():
    args = platform_args("3.11", "2_36", "aarch64")
    tags = [args[index + 1] for index, arg in enumerate(args) if arg == "--platform"]
    assert "manylinux_2_17_aarch64" in tags and "manylinux2014_aarch64" in tags and "manylinux_2_36_aarch64" in tags
    assert "manylinux_2_37_aarch64" not in tags and not [tag for tag in tags if "x86_64" in tag]


def test_the_aarch64_wheels_live_apart_from_the_x86_ones(project):
    """A lock's pins carry every platform's hashes: side by side, an aarch64 numpy would pass the
    hash check of an x86-64 image."""
    assert Wheelhouse(project, ARM64).directory.name == "cp311-aarch64"
    assert Wheelhouse(project, BASES["bookworm"]).directory.name == "cp311"


@pytest.mark.parametrize("host, in_base", [("x86_64", True), ("aarch64", False)])
def test_the_arm64_lock_is_resolved_in_its_base_where_the_host_is_another_machine(monkeypatch, host, in_base):
    monkeypatch.setattr(platform, "machine", lambda: host)
    assert resolver.resolved_in_base(LOCKS["drift-arm64"]) is in_base
    assert emulation.emulated(ARM64) is in_base


def test_a_foreign_root_file_system_becomes_an_archive_whose_config_names_its_architecture(tmp_path):
    """docker import would record the daemon's own architecture; the archive states the base's."""
    from coldchain.environments.rootfs_image import write_archive

    rootfs = tmp_path / "rootfs.tar"
    with tarfile.open(rootfs, "w") as archive:
        archive.add(__file__, arcname="./etc/marker")
    write_archive(rootfs, tmp_path / "image.tar", ref=ARM64.local_image, platform=ARM64.platform,
                  labels={"io.coldchain.platform": ARM64.platform}, env=["LANG=C.UTF-8"], cmd=["/bin/bash"])
    with tarfile.open(tmp_path / "image.tar") as archive:
        (manifest,) = json.loads(archive.extractfile("manifest.json").read())
        config = json.loads(archive.extractfile(manifest["Config"]).read())
        layer = archive.extractfile(manifest["Layers"][0]).read()
    assert manifest["RepoTags"] == ["coldchain-base:bookworm-arm64"]
    assert (config["architecture"], config["os"]) == ("arm64", "linux")
    assert config["config"]["Labels"] == {"io.coldchain.platform": "linux/arm64"}
    assert layer == rootfs.read_bytes()
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]


def test_a_foreign_base_is_loaded_and_a_native_one_imported(tiny_project, monkeypatch):
    """build_local_base's last step, with debootstrap and tar replaced: the arm64 base goes through
    docker load (its config says arm64), the amd64 one through docker import as before."""
    from coldchain.environments import bases
    from fake_engine import FakeEngine

    loaded = []
    monkeypatch.setattr(bases.os, "geteuid", lambda: 0)
    monkeypatch.setattr(bases.shutil, "which", lambda name: f"/usr/sbin/{name}")
    monkeypatch.setattr(bases, "_debootstrap", lambda spec, rootfs, mirror: rootfs.mkdir(parents=True))
    def fake_run(command, what, log_file=None):
        if command[0] == "tar":  # the packed root file system: an empty archive will do
            Path(command[command.index("-cf") + 1]).write_bytes(b"")

    monkeypatch.setattr(bases, "_run", fake_run)
    monkeypatch.setattr(bases, "emulated", lambda spec: spec.machine != "x86_64")
    engine = FakeEngine(registry=False)

    def load(archive):
        loaded.append(archive.name)
        return engine.import_rootfs(archive, ARM64.local_image, [])
    monkeypatch.setattr(engine, "load_images", load, raising=False)
    bases.build_local_base(engine, tiny_project, ARM64)
    bases.build_local_base(engine, tiny_project, BASES["bookworm"])
    assert loaded == ["image.tar"]
    assert engine.imports == ["coldchain-base:bookworm-arm64", "coldchain-base:bookworm"]


UNHASHED = """#
# This file is autogenerated by pip-compile with Python 3.11
#
absl-py==2.5.1
    # via tensorflow
tensorflow==2.14.1
    # via -r requirements-infer.in
tensorflow-cpu-aws==2.14.1
    # via tensorflow
"""


def test_pins_of_a_foreign_lock_get_the_hashes_of_that_machines_wheels():
    from coldchain.environments.foreign_lock import add_hashes, unhashed_pins

    assert unhashed_pins(UNHASHED) == [("absl-py", "2.5.1"), ("tensorflow", "2.14.1"), ("tensorflow-cpu-aws", "2.14.1")]
    hashes = {("absl-py", "2.5.1"): ["sha256:" + "a" * 64], ("tensorflow", "2.14.1"): ["sha256:" + "b" * 64],
              ("tensorflow-cpu-aws", "2.14.1"): ["sha256:" + "d" * 64, "sha256:" + "c" * 64]}
    text = add_hashes(UNHASHED, hashes, "requirements-infer.in")
    assert ("tensorflow-cpu-aws==2.14.1 \\\n    --hash=sha256:" + "c" * 64 + " \\\n    --hash=sha256:" + "d" * 64
            + "\n    # via tensorflow") in text


def test_the_rewritten_lock_parses_as_a_hashed_lock(tmp_path):
    from coldchain.environments.foreign_lock import add_hashes

    hashes = {pin: ["sha256:" + "e" * 64] for pin in [("absl-py", "2.5.1"), ("tensorflow", "2.14.1"),
                                                     ("tensorflow-cpu-aws", "2.14.1")]}
    (tmp_path / "x.lock").write_text(add_hashes(UNHASHED, hashes, "x.in"))
    lock = parse_lock(tmp_path / "x.lock")
    assert lock.pins["tensorflow-cpu-aws"].hashes == frozenset({"sha256:" + "e" * 64})
    assert lock.version("absl-py") == "2.5.1"


def test_a_pin_without_a_wheel_for_the_machine_is_refused_naming_it():
    from coldchain.environments.foreign_lock import add_hashes
    from coldchain.errors import LockError

    with pytest.raises(LockError, match="tensorflow-cpu-aws==2.14.1 has no wheel for this lock's machine"):
        add_hashes(UNHASHED, {("absl-py", "2.5.1"): ["sha256:" + "a" * 64],
                              ("tensorflow", "2.14.1"): ["sha256:" + "b" * 64]}, "requirements-infer.in")
