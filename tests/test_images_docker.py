"""Real images from the real locks: labels, contents, cache, and hash enforcement.
Marked `docker`: under CI=true a missing daemon fails these tests instead of skipping them."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys

import pytest

from coldchain.config import BASES, IMAGES, KIT_LABEL, LOCKS
from coldchain.environments.context import BuildContext
from coldchain.engine import RunSpec
from coldchain.errors import BuildError
from coldchain.environments.images import BuildOptions, build_image, git_revision
from coldchain.environments.locks import check_all
from coldchain.environments.wheelhouse import Wheelhouse

pytestmark = pytest.mark.docker


def run_in(engine, image: str, *command: str, run_id: str) -> str:
    result = engine.run(RunSpec(image=image, command=command, labels={KIT_LABEL: "coldchain", "io.coldchain.run": run_id}))
    assert result.exit_code == 0, result.stderr[-3000:]
    return result.stdout


def test_labels_record_the_environment(kit_images, project):
    for role, built in kit_images.items():
        labels = built.info.labels
        lock_path = project.path(labels["io.coldchain.lock.file"])
        assert labels["io.coldchain.lock.sha256"] == hashlib.sha256(lock_path.read_bytes()).hexdigest()
        assert labels["io.coldchain.tensorflow.version"] == "2.14.1"
        assert labels["io.coldchain.numpy.version"]
        assert labels["io.coldchain.python.version"].startswith("3.11.")
        assert labels["io.coldchain.device"] == "cpu"
        assert labels["io.coldchain.role"] == role
        assert labels["org.opencontainers.image.base.digest"] == built.base.image_id
        # Built now: this checkout's commit exactly. Reused (identical inputs), it keeps the commit of the
        # build that made it, which only test_unchanged_rebuild_comes_from_cache's forced build pins down.
        if not built.reused:
            assert labels["org.opencontainers.image.revision"] == git_revision(project.root)


def test_recorded_environment_matches_the_labels(docker_engine, kit_images, run_id):
    for built in kit_images.values():
        environment = json.loads(run_in(docker_engine, built.tag, "cat", "/opt/coldchain/environment.json", run_id=run_id))
        assert environment["versions"]["tensorflow"] == built.info.labels["io.coldchain.tensorflow.version"]
        assert environment["versions"]["numpy"] == built.info.labels["io.coldchain.numpy.version"]
        assert environment["versions"]["python"] == built.info.labels["io.coldchain.python.version"]
        packages = run_in(docker_engine, built.tag, "cat", "/opt/coldchain/base-packages.txt", run_id=run_id)
        assert any(line.startswith("python3\t") for line in packages.splitlines())


def test_inference_image_is_non_root_and_has_no_slim(docker_engine, kit_images, run_id):
    probe = "import os, importlib.util as u; print(os.getuid(), u.find_spec('tf_slim') is None, u.find_spec('PIL') is not None)"
    assert run_in(docker_engine, kit_images["infer"].tag, "python", "-c", probe, run_id=run_id).split() == ["10001", "True", "True"]
    assert run_in(docker_engine, kit_images["train"].tag, "python", "-c", probe, run_id=run_id).split() == ["10001", "False", "True"]


def test_images_hold_no_wheels_or_pip_cache(docker_engine, kit_images, run_id):
    probe = ("import glob, os; print([p for pattern in ('/tmp/coldchain/**', '/root/.cache/pip/**', '/opt/**/*.whl') "
             "for p in glob.glob(pattern, recursive=True) if os.path.isfile(p)])")
    for built in kit_images.values():
        # No tmpfs over /tmp here: the image's own /tmp is what is inspected.
        result = docker_engine.run(RunSpec(image=built.tag, command=("python", "-c", probe), tmpfs={},
                                           labels={KIT_LABEL: "coldchain", "io.coldchain.run": run_id}))
        assert result.exit_code == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_no_layer_carries_credentials_or_a_ca_bundle(docker_engine, kit_images, run_id):
    """The build never needs the host's CA bundle or any credential (the wheelhouse is local), and
    none may hide in a layer: not in the files, the environment, or the recorded build commands."""
    suspicious = ("/etc/coldchain-ca.pem", "/root/.netrc", "/root/.pypirc", "/etc/pip.conf", "/root/.config/pip",
                  "/root/.pip", "/root/.docker/config.json", "/tmp/.netrc")
    probe = (f"import os, json; print(json.dumps({{'files': [p for p in {list(suspicious)!r} if os.path.exists(p)], "
             "'env': sorted(k for k in os.environ if any(w in k.upper() for w in "
             "('CERT', 'TOKEN', 'PASSWORD', 'SECRET', 'INDEX_URL', 'PROXY')))}))")
    for built in kit_images.values():
        result = docker_engine.run(RunSpec(image=built.tag, command=("python", "-c", probe), tmpfs={},
                                           labels={KIT_LABEL: "coldchain", "io.coldchain.run": run_id}))
        assert result.exit_code == 0, result.stderr[-2000:]
        assert json.loads(result.stdout) == {"files": [], "env": []}
        history = " ".join(layer.get("CreatedBy", "") for layer in docker_engine.client.images.get(built.tag).history())
        for word in ("PIP_CERT", "ca-certificates.crt", "--index-url", "TOKEN", "PASSWORD"):
            assert word not in history, word


def test_unchanged_rebuild_comes_from_cache(docker_engine, project, kit_images, run_id, caplog, request):
    again = build_image(docker_engine, project, IMAGES["infer-cpu"], BuildOptions(prefix=run_id))
    assert again.reused and again.info.id == kit_images["infer"].info.id
    caplog.set_level(logging.DEBUG, logger="coldchain.environments.images")
    # Under a name of its own: the session's tag must keep naming the image other tests were given
    # (an image reused from an earlier commit gets a new id here, from its newer revision label).
    forced_prefix = f"{run_id}-forced"
    request.addfinalizer(lambda: docker_engine.remove_image(IMAGES["infer-cpu"].tag(forced_prefix)))
    forced = build_image(docker_engine, project, IMAGES["infer-cpu"], BuildOptions(prefix=forced_prefix, force=True))
    # A build made now records the commit it was made from, to the letter (-dirty for uncommitted edits).
    assert not forced.reused
    assert forced.info.labels["org.opencontainers.image.revision"] == git_revision(project.root)
    # The install stage was removed after the first build, so pip ran again; the venv it made is
    # byte-identical (SOURCE_DATE_EPOCH), so every layer of the image comes from the cache.
    layers = lambda ref: docker_engine.client.images.get(ref).attrs["RootFS"]["Layers"]  # noqa: E731
    assert layers(forced.info.id) == layers(kit_images["infer"].info.id)
    lines = [r.getMessage().split(" | ", 1)[-1] for r in caplog.records if r.name == "coldchain.environments.images"]
    froms = [i for i, line in enumerate(lines) if line.startswith("Step ") and " : FROM " in line]
    assert len(froms) == 2, "\n".join(lines)
    final_steps = [i for i, line in enumerate(lines) if i > froms[1] and line.startswith("Step ")
                   and (" : RUN " in line or " : COPY " in line)]
    assert len(final_steps) >= 3, "\n".join(lines)
    assert all(lines[i + 1].endswith("---> Using cache") for i in final_steps), "\n".join(lines)
    # ...and the install stage (wheels, second venv) is gone again.
    install_stage = [line.split()[-1] for line in lines[:froms[1]] if line.strip().startswith("---> ")
                     and len(line.split()) == 2]
    assert install_stage and docker_engine.inspect_image(install_stage[-1]) is None, install_stage


def test_edited_hash_in_lock_fails_naming_the_package(project, run_id, tmp_path):
    copy = tmp_path / "checkout"
    copy.mkdir()
    for path in [*project.root.glob("requirements*"), *project.root.glob("Dockerfile.*")]:
        shutil.copy2(path, copy / path.name)
    shutil.copytree(project.path("coldchain"), copy / "coldchain")
    shutil.copytree(project.path("scripts"), copy / "scripts")
    (copy / "wheelhouse").symlink_to(project.wheelhouse)
    lock = copy / "requirements-infer.lock"
    lines = lock.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("six=="))
    lines[at + 1] = "    --hash=sha256:" + "0" * 64 + (" \\" if lines[at + 1].endswith("\\") else "")
    lock.write_text("\n".join(lines) + "\n")
    result = subprocess.run([sys.executable, "-m", "coldchain", "images", "--image", "infer-cpu", "--prefix", run_id,
                             "--project", str(copy)], capture_output=True, text=True, cwd=project.root)
    assert result.returncode != 0
    assert "six==" in result.stderr and "requirements-infer.lock" in result.stderr, result.stderr


def test_pip_in_the_image_refuses_a_swapped_wheel(docker_engine, project, kit_images, run_id, tmp_path):
    """Second line of defence: even a context that skipped the host check cannot install a wheel
    whose hash the lock does not pin."""
    spec = IMAGES["infer-cpu"]
    context = BuildContext()
    context.add_file(spec.dockerfile, project.path(spec.dockerfile))
    context.add_file("requirements-infer.lock", project.path("requirements-infer.lock"))
    context.add_tree("scripts/incontainer", project.path("scripts/incontainer"))
    # Only the wheels this lock pins: the shared wheelhouse also holds the CUDA and drift wheels.
    lock = check_all(project, [spec.lock])[spec.lock]
    for wheel in Wheelhouse(project, BASES[spec.base]).ensure(LOCKS[spec.lock], lock):
        context.add_file(f"wheels/{wheel.path.name}", wheel.path)
    wheels = project.wheelhouse / "cp311"
    six = next(name for name in context.files if name.startswith("wheels/six-"))
    context.add_bytes(six, next(wheels.glob("termcolor-*.whl")).read_bytes())
    del context.files[six]
    tarball = tmp_path / "context.tar"
    context.write(tarball)
    tag = f"{run_id}-tampered:cpu"
    with pytest.raises(BuildError) as caught:
        docker_engine.build(tarball, dockerfile=spec.dockerfile, tag=tag, labels={KIT_LABEL: "coldchain"},
                            buildargs={"BASE_IMAGE": kit_images["infer"].base.image_id, "LOCK": "requirements-infer.lock"},
                            log=lambda line: None)
    assert "DO NOT MATCH THE HASHES" in caught.value.log_tail
    assert "six==" in caught.value.log_tail
    assert docker_engine.inspect_image(tag) is None, "a failed build must not be tagged"


def test_cuda_check_fails_clearly_without_cuda_wheels(docker_engine, kit_images, run_id):
    """The build-time CUDA check, run where the CUDA wheels are missing, names what is missing."""
    result = docker_engine.run(RunSpec(image=kit_images["train"].tag, labels={KIT_LABEL: "coldchain"},
                                       command=("python", "-m", "incontainer.env_check", "--device", "cuda")))
    assert result.exit_code == 2
    assert "environment check failed" in result.stderr
    assert "no CUDA wheel provides cuda_version 11.8" in result.stderr


def test_version_mismatch_fails_the_check(docker_engine, kit_images):
    result = docker_engine.run(RunSpec(image=kit_images["infer"].tag, labels={KIT_LABEL: "coldchain"},
                                       command=("python", "-m", "incontainer.env_check", "--expect-tensorflow", "2.13.1")))
    assert result.exit_code == 2
    assert "tensorflow is 2.14.1, the lock/base promised 2.13.1" in result.stderr


def test_the_cpu_images_steps_drop_only_tensorflows_known_import_noise(docker_engine, kit_images, run_id):
    """TF's CPU wheel prints CUDA-factory errors and a TensorRT warning at every import; the steps drop
    those lines (and only those), so a user reading the log sees the kit's lines and real problems."""
    image = kit_images["infer"].tag
    raw = docker_engine.run(RunSpec(image=image, command=("python", "-c", "import tensorflow"),
                                    environment={"TF_CPP_MIN_LOG_LEVEL": "0"}, labels={"io.coldchain.run": run_id}))
    assert "Unable to register" in raw.stderr, "the noise this test is about is there without the filter"
    # The doctor imports TensorFlow before reading its arguments (infer reads them first, to hash the
    # model while TensorFlow imports, so its --help needs no TensorFlow).
    step = docker_engine.run(RunSpec(image=image, command=("python", "-m", "incontainer.diagnosis.doctor", "--help"),
                                     environment={"TF_CPP_MIN_LOG_LEVEL": "0"}, labels={"io.coldchain.run": run_id}))
    assert step.exit_code == 0 and "--json" in step.stdout, step.stderr[-2000:]
    assert "Unable to register" not in step.stderr and "TensorRT" not in step.stderr, step.stderr[-2000:]
    assert "oneDNN custom operations" in step.stderr or "cpu_feature_guard" in step.stderr, \
        "TF's other import lines are kept"


def test_prune_removes_only_the_kits_nameless_images(docker_engine, run_id, tmp_path):
    """Docker keeps an image whose tag moved to a rebuild, nameless; 'make prune' removes the kit's
    such images and nothing that still has a name or is not the kit's."""
    import io
    import tarfile

    from coldchain.environments.images import remove_superseded

    def rootfs(content: bytes):
        path = tmp_path / f"rootfs-{len(content)}.tar"
        with tarfile.open(path, "w") as tar:
            info = tarfile.TarInfo("marker")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        return path

    kit, theirs = f"{run_id}-prune:kit", f"{run_id}-prune:theirs"
    labelled = [f"LABEL {KIT_LABEL}=coldchain"]
    made: list[str] = []  # removed at the end, whatever happens
    try:
        def make(content: bytes, ref: str, changes: list[str]):
            image = docker_engine.import_rootfs(rootfs(content), ref, changes)
            made.append(image.id)
            return image

        old = make(b"old", kit, labelled)
        new = make(b"new!", kit, labelled)  # the old one is left nameless
        other = make(b"other image", theirs, [])
        make(b"other image, again", theirs, [])  # leaves `other` nameless: not the kit's to remove
        assert docker_engine.inspect_image(old.id) is not None and not docker_engine.inspect_image(old.id).tags
        removed, _ = remove_superseded(docker_engine)
        assert removed >= 1 and docker_engine.inspect_image(old.id) is None
        assert docker_engine.inspect_image(new.id) is not None and docker_engine.inspect_image(other.id) is not None
    finally:
        for ref in made:
            docker_engine.remove_image(ref)
