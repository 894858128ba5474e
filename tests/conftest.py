from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from coldchain.config import KIT_LABEL, LOCKS, Project
from coldchain.environments.locks import input_sha256, stamp_lock
from coldchain.contract import MANIFEST_FILE

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# A Docker test's limit, setup included: its session fixtures may build a CUDA image cold. Every other
# test has pytest.ini's short one.
DOCKER_TIMEOUT_S = 2700


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("docker") and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DOCKER_TIMEOUT_S))


@pytest.fixture(scope="session")
def project() -> Project:
    return Project(ROOT)


@pytest.fixture
def project_copy(tmp_path: Path) -> Project:
    """A scratch checkout with the real requirement files, for tests that edit them."""
    for path in ROOT.glob("requirements*"):
        shutil.copy2(path, tmp_path / path.name)
    (tmp_path / "coldchain").mkdir()
    return Project(tmp_path)


@pytest.fixture(scope="session")
def run_id() -> str:
    """Unique per test session, so parallel runs never share image tags or containers."""
    from coldchain.config import test_session_prefix
    return test_session_prefix()


@pytest.fixture(scope="session")
def docker_engine():
    from coldchain.engine.docker import DockerEngine
    from coldchain.errors import DaemonUnavailable

    try:
        engine = DockerEngine()
        engine.ping()
    except DaemonUnavailable as error:
        if IN_CI:
            pytest.fail(f"CI=true but no Docker daemon answers: {error}. Docker tests must run in CI "
                        "('make test' runs scripts/ensure-docker.sh first).")
        pytest.skip(f"no Docker daemon: {error}")
    return engine


@pytest.fixture(scope="session")
def session_tags(docker_engine, run_id):
    """Image tags created by this session, removed at the end. An image that only this session's
    tag holds is a kit image built from this checkout's inputs (a CUDA one is 5 GB and minutes of
    building): it is kept under the kit's own name unless that name holds an image of the same inputs,
    as `make images` would have left it, so the next run finds it by its inputs instead of building it
    again."""
    from coldchain.environments.images import SOURCE_LABEL

    tags: list[str] = []
    yield tags
    for tag in tags:
        info = docker_engine.inspect_image(tag)
        if info is not None and info.tags == (tag,) and info.labels.get(KIT_LABEL) == "coldchain":
            kit_tag = "coldchain-" + tag.removeprefix(f"{run_id}-")
            held = docker_engine.inspect_image(kit_tag)
            # A name held by an image of other inputs (an older commit's) moves, as a rebuild moves it:
            # the old image is then superseded, and `make prune` can free its space.
            if held is None or held.labels.get(SOURCE_LABEL) != info.labels.get(SOURCE_LABEL):
                docker_engine.tag(info.id, kit_tag)
        docker_engine.remove_image(tag)


@pytest.fixture(autouse=True)
def _log_level(caplog):
    caplog.set_level(logging.INFO, logger="coldchain")


WHEELS = {"tensorflow-2.14.1-cp311-cp311-manylinux2014_x86_64.whl": b"tf",
          "numpy-1.26.4-cp311-cp311-manylinux2014_x86_64.whl": b"np"}


@pytest.fixture
def tiny_project(tmp_path, project):
    """A checkout whose locks pin two fake wheels that are already in the wheelhouse."""
    root = tmp_path / "proj"
    root.mkdir()
    for name in ("Dockerfile.train", "Dockerfile.infer"):
        shutil.copy2(project.path(name), root / name)
    shutil.copytree(project.path("scripts/incontainer"), root / "scripts/incontainer")
    wheelhouse = root / "wheelhouse" / "cp311"
    wheelhouse.mkdir(parents=True)
    pins = ""
    for filename, data in WHEELS.items():
        (wheelhouse / filename).write_bytes(data)
        name, version = filename.split("-")[:2]
        pins += f"{name}=={version} \\\n    --hash=sha256:{hashlib.sha256(data).hexdigest()}\n"
    tiny = Project(root)
    for lock_name in ("train-cpu", "infer-cpu"):
        spec = LOCKS[lock_name]
        (root / spec.source).write_text("tensorflow\nnumpy\n")
        (root / spec.lock).write_text(stamp_lock("#\n#    make lock\n#\n" + pins, input_sha256(tiny, spec)))
    return tiny


# The smallest drift matrix that names kit images: for tests of what moves images between daemons.
TWO_ENV_MATRIX = """schema = 1
reference_env = "training"
[envs.training]
description = "the training image"
image = "train-cpu"
[envs.infer-cpu]
description = "the inference image"
image = "infer-cpu"
[[cases]]
name = "infer"
env = "infer-cpu"
expect = "bit-exact"
"""

# The one tiny chain (tiny_chain) and its sizes, which tests count with.
TINY_CLASSES, TINY_TRAIN_PER_CLASS, TINY_VAL_PER_CLASS, TINY_STEPS = 3, 12, 4, 4
TINY_DATA = ("--classes", str(TINY_CLASSES), "--train-per-class", str(TINY_TRAIN_PER_CLASS), "--val-per-class",
             str(TINY_VAL_PER_CLASS), "--size", "32", "--seed", "5")
TINY_TRAIN = ("--image-size", "32", "--max-steps", str(TINY_STEPS), "--batch-size", "8", "--log-every", "2")


@pytest.fixture(scope="session")
def kit_images(docker_engine, project, run_id, session_tags):
    """The CPU train and infer images under this session's prefix, by role ("train", "infer"): the one
    build of them every Docker test shares (Docker's layer cache makes it quick)."""
    from coldchain.config import IMAGES
    from coldchain.environments.images import BuildOptions, build_images

    specs = [IMAGES["train-cpu"], IMAGES["infer-cpu"]]
    session_tags.extend(spec.tag(run_id) for spec in specs)  # registered before building: cleaned up either way
    train, infer = build_images(docker_engine, project, specs, BuildOptions(prefix=run_id))
    return {"train": train, "infer": infer}


@pytest.fixture(scope="session")
def tiny_chain(docker_engine, project, run_id, kit_images, tmp_path_factory):
    """data/, run/ and model/ of a TINY_STEPS-step training run on 32 px data, frozen: the one chain every
    Docker test shares, enough to make model variants from. Tests write their own outputs elsewhere."""
    from coldchain.steps.pipeline import StepConfig, run_step

    work = tmp_path_factory.mktemp("tiny")
    for name, module, inputs, arguments in (
            ("data", "data", {}, TINY_DATA),
            ("train", "train", {"/data": work / "data"}, ("--data", "/data", *TINY_TRAIN)),
            ("freeze", "freeze", {"/run": work / "run"}, ("--run", "/run"))):
        output = work / {"data": "data", "train": "run", "freeze": "model"}[name]
        run_step(docker_engine, project, StepConfig(name=name, role="train", module=module, output=output, inputs=inputs,
                                                    arguments=arguments, prefix=run_id, run_id=run_id),
                 kit_images["train"])
    return work


@pytest.fixture(scope="session")
def quick_reproducibility(docker_engine, project, run_id, kit_images, tiny_chain):
    """(options, section): `make bench`'s quick reproducibility runs on tiny_chain's data (each training
    mode under both simulated CPU classes), made once a session in the folder the bench keeps them in.
    The bench test's `make bench` finds them by their key instead of training four times more; the
    numerics test compares the portable pair's bytes."""
    from coldchain.bench.reproducibility import bench_reproducibility
    from coldchain.bench.suite import BenchPaths, BenchRequest, reproducibility_options

    paths = BenchPaths.of(project, BenchRequest(run=tiny_chain / "run", quick=True))
    options = reproducibility_options(paths, quick=True, prefix=run_id)
    shutil.rmtree(options.out, ignore_errors=True)  # trained by this session, never found from an earlier one
    return options, bench_reproducibility(docker_engine, project, options)


def newest_source_mtime() -> float:
    paths = [*ROOT.joinpath("coldchain").rglob("*.py"), *ROOT.joinpath("scripts").rglob("*.py"),
             ROOT / "drift" / "matrix.toml", *ROOT.glob("requirements*.lock"), *ROOT.glob("Dockerfile.*")]
    return max(path.stat().st_mtime for path in paths)


def made_by_make_drift_test() -> Path | None:
    """The unsharded report `make drift-test` left (CI runs it just before the tests), when it is of
    this checkout's code, matrix and model: comparing with it spares running the whole matrix again."""
    report_path, model = ROOT / "out" / "drift" / "drift-report.json", ROOT / "out" / "model"
    try:
        report = json.loads(report_path.read_text())
        sha = json.loads((model / MANIFEST_FILE).read_text())["model"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if report.get("model_sha256") != sha or report.get("model") != "out/model" or \
            report_path.stat().st_mtime < newest_source_mtime() or "matrix_cases" not in report:
        return None
    return report_path
