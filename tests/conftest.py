from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

import pytest

from coldchain.config import Project

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


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
    return f"cctest-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="session")
def docker_engine():
    from coldchain.docker_engine import DockerEngine
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
def session_tags(docker_engine):
    """Image tags created by this session; untagged at the end (shared layers stay cached)."""
    tags: list[str] = []
    yield tags
    for tag in tags:
        docker_engine.remove_image(tag)


@pytest.fixture(autouse=True)
def _log_level(caplog):
    caplog.set_level(logging.INFO, logger="coldchain")
