"""Images across CI jobs, for real: docker save/load through the engine, and push/pull by digest
against a registry server this test starts on a loopback port (Debian's docker-registry; nothing
is pulled from outside). The receiving side checks each image against its checkout's inputs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import urllib.request

import pytest

from coldchain.contract import Exit
from coldchain.environments.matrix import load_matrix
from coldchain.drift.transfer import load, pull, push, read_index, resolve, save
from coldchain.engine.registry import BINARY, local_registry
from coldchain.environments.images import BuildOptions
from coldchain.errors import EngineError
from conftest import IN_CI, ROOT
from conftest import TWO_ENV_MATRIX as MATRIX

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]



@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    path = tmp_path_factory.mktemp("matrix") / "matrix.toml"
    path.write_text(MATRIX)
    return load_matrix(path)


@pytest.fixture(scope="module")
def sent(docker_engine, project, run_id, kit_images, matrix):
    return resolve(docker_engine, project, matrix, ["infer-cpu"], BuildOptions(prefix=run_id))


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    if shutil.which(BINARY) is None:
        installed = subprocess.run(["bash", str(ROOT / "scripts/ensure-registry.sh")], capture_output=True, text=True,
                                   check=False)
        if installed.returncode != 0:
            message = f"no registry server to test against: {installed.stderr.strip()}"
            pytest.fail(message) if IN_CI else pytest.skip(message)
    with local_registry(tmp_path_factory.mktemp("registry")) as address:
        yield address


def _newer_checkout(tmp_path):
    """Another job's checkout, one commit later: a script was added."""
    copy = tmp_path / "checkout"
    copy.mkdir()
    for path in [*ROOT.glob("Dockerfile.*"), *ROOT.glob("requirements*")]:
        shutil.copy2(path, copy / path.name)
    shutil.copytree(ROOT / "scripts/incontainer", copy / "scripts/incontainer",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "coldchain").mkdir()
    (copy / "scripts/incontainer/newer.py").write_text("# a later commit's script\n")
    return copy


def _forget_registry_names(docker_engine, registry):
    """Every name under this run's registry address, tags and the name@digest a pull leaves: only the
    names go, the images stay under the session's own tags."""
    for image in docker_engine.client.images.list():
        for ref in [*(image.attrs.get("RepoTags") or []), *(image.attrs.get("RepoDigests") or [])]:
            if ref.startswith(f"{registry}/"):
                docker_engine.remove_image(ref)


def test_an_archive_round_trip_and_a_newer_checkout_refuses_it(docker_engine, project, run_id, sent, matrix, tmp_path):
    archive = tmp_path / "images.tar"
    saved = save(docker_engine, sent, archive)
    assert saved.bytes > 1e9 and archive.is_file() and not list(tmp_path.glob(".images.tar.partial-*"))
    with tarfile.open(archive) as tar:  # a docker save archive: the image and its base, by name
        tags = {tag for entry in json.load(tar.extractfile("manifest.json")) for tag in entry["RepoTags"] or []}
    assert {sent[0].tag, sent[0].base.ref} <= tags

    docker_engine.remove_image(sent[0].tag)  # the receiving job has no such name until it loads
    got = load(docker_engine, project, matrix, ["infer-cpu"], archive, BuildOptions(prefix=run_id, allow_pull=False))
    assert got.images[0]["id"] == sent[0].info.id
    assert docker_engine.inspect_image(sent[0].tag).id == sent[0].info.id

    # A job on a later commit must not test these images: one clear message, its exit code, no traceback.
    copy = _newer_checkout(tmp_path)
    result = subprocess.run([sys.executable, "-m", "coldchain", "images-load", str(archive), "--project", str(copy),
                             "--matrix", str(matrix.path), "--model", str(tmp_path / "no-model"),
                             "--prefix", run_id], capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == Exit.BUILD, result.stderr
    assert "scripts/incontainer" in result.stderr and str(archive) in result.stderr
    assert "Traceback" not in result.stderr


def test_push_then_pull_by_digest_from_a_local_registry(docker_engine, project, run_id, sent, matrix, registry,
                                                        tmp_path, request):
    refs = [f"{registry}/{sent[0].tag}", f"{registry}/{sent[0].base.ref}"]
    request.addfinalizer(lambda: _forget_registry_names(docker_engine, registry))  # before they can exist
    pushed = push(docker_engine, sent, registry, tmp_path / "images.json")
    assert [image["tag"] for image in pushed.images] == [sent[0].tag]
    entries = read_index(tmp_path / "images.json")
    assert set(entries) == {sent[0].tag, sent[0].base.ref}
    catalog = json.load(urllib.request.urlopen(f"http://{registry}/v2/_catalog", timeout=10))
    assert {ref.split("/", 1)[1].rsplit(":", 1)[0] for ref in refs} <= set(catalog["repositories"])

    for ref in refs:
        docker_engine.remove_image(ref)  # the pull must come from the registry, by digest
    docker_engine.remove_image(sent[0].tag)
    got = pull(docker_engine, project, matrix, ["infer-cpu"], tmp_path / "images.json",
               BuildOptions(prefix=run_id, allow_pull=False))
    assert got.images[0]["id"] == sent[0].info.id
    assert docker_engine.inspect_image(sent[0].tag).id == sent[0].info.id

    index = json.loads((tmp_path / "images.json").read_text())
    index["images"][sent[0].tag]["ref"] = index["images"][sent[0].tag]["ref"].split("@")[0] + "@sha256:" + "0" * 64
    (tmp_path / "forged.json").write_text(json.dumps(index))
    with pytest.raises(EngineError, match="registry has no|manifest unknown|not found"):
        pull(docker_engine, project, matrix, ["infer-cpu"], tmp_path / "forged.json",
             BuildOptions(prefix=run_id, allow_pull=False))
