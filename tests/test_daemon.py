"""The daemon checks, without a daemon: scripts/ensure-docker.sh with stub commands, and the
engine's message when nothing answers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from coldchain.errors import DaemonUnavailable

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "ensure-docker.sh"


def stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(0o755)


@pytest.fixture
def stub_path(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sleep", "dirname", "tr", "mkdir", "tail", "cat", "touch"):
        real = subprocess.run(["bash", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        (bin_dir / tool).symlink_to(real)
    marker = tmp_path / "dockerd-started"
    stub(bin_dir, "docker", "exit 1")  # nothing answers
    stub(bin_dir, "dockerd", f"touch {marker}; exit 0")
    stub(bin_dir, "setsid", '"$@"')
    stub(bin_dir, "nohup", '"$@"')
    return bin_dir, marker


def run_script(bin_dir: Path, **env) -> subprocess.CompletedProcess:
    environment = {"PATH": str(bin_dir), "COLDCHAIN_DOCKERD_WAIT": "1",
                   "COLDCHAIN_DOCKERD_LOG": str(bin_dir.parent / "dockerd.log"), **env}
    return subprocess.run(["bash", str(SCRIPT)], env=environment, capture_output=True, text=True, timeout=60)


def test_never_starts_a_second_daemon(stub_path):
    bin_dir, marker = stub_path
    stub(bin_dir, "pgrep", "echo 4242; exit 0")  # a dockerd exists but does not answer
    result = run_script(bin_dir)
    assert result.returncode == 1
    assert "dockerd is running (pid 4242" in result.stderr
    assert not marker.exists()


def test_non_root_gets_instructions_not_an_install(stub_path):
    bin_dir, marker = stub_path
    stub(bin_dir, "pgrep", "exit 1")
    stub(bin_dir, "id", "echo 1000")
    result = run_script(bin_dir, USER="someone")
    assert result.returncode == 1
    assert "not root" in result.stderr and "systemctl start docker" in result.stderr
    assert not marker.exists()


def test_remote_docker_host_is_not_replaced_by_a_local_daemon(stub_path):
    bin_dir, marker = stub_path
    result = run_script(bin_dir, DOCKER_HOST="tcp://10.0.0.1:2375")
    assert result.returncode == 1 and "DOCKER_HOST=tcp://10.0.0.1:2375 does not answer" in result.stderr
    assert not marker.exists()


def test_starts_dockerd_once_when_root_and_none_runs(stub_path):
    bin_dir, marker = stub_path
    stub(bin_dir, "pgrep", "exit 1")
    stub(bin_dir, "id", "echo 0")
    result = run_script(bin_dir)  # the stub daemon never answers, so the script gives up with the log
    assert marker.exists()
    assert result.returncode == 1 and "did not answer within 1s" in result.stderr


def test_engine_reports_a_missing_daemon_with_the_fix(tmp_path, monkeypatch):
    from coldchain.engine.docker import DockerEngine

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no.sock")
    with pytest.raises(DaemonUnavailable) as caught:
        DockerEngine().ping()
    assert "make docker" in caught.value.fix


def test_host_package_never_uses_a_shell():
    package = Path(__file__).resolve().parent.parent / "coldchain"
    offenders = [f"{path.name}:{number}" for path in package.rglob("*.py")
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if "shell=True" in line or "os.system(" in line or "os.popen(" in line]
    assert offenders == []


def test_host_package_never_imports_tensorflow():
    package = Path(__file__).resolve().parent.parent / "coldchain"
    importing = [path.name for path in package.rglob("*.py")
                 if any(line.strip().startswith(("import tensorflow", "from tensorflow", "import tf_slim"))
                        for line in path.read_text().splitlines())]
    assert importing == []


def test_daemon_dying_mid_run_is_a_clear_error_and_leaves_no_output(tmp_path, monkeypatch):
    """The connection breaks while a step runs: DaemonUnavailable with the fix, no staging left,
    no output moved into place, so rerunning starts the step again cleanly."""
    import requests

    from coldchain.config import Project
    from coldchain.engine.docker import DockerEngine
    from coldchain.engine import RunSpec
    from coldchain.errors import DaemonUnavailable
    from coldchain.steps.pipeline import StepConfig, run_step
    from coldchain.environments.images import BuiltImage
    from coldchain.engine import ImageInfo

    class DyingContainer:
        def start(self):
            pass

        def logs(self, **kwargs):
            raise requests.exceptions.ConnectionError("Connection aborted: daemon socket closed")

        def wait(self, **kwargs):
            raise requests.exceptions.ConnectionError("Connection aborted: daemon socket closed")

        def remove(self, force=False):
            raise requests.exceptions.ConnectionError("daemon socket closed")

    class Client:
        class containers:
            @staticmethod
            def create(image, **kwargs):
                return DyingContainer()

        @staticmethod
        def version():
            raise requests.exceptions.ConnectionError("daemon socket closed")

    engine = DockerEngine.__new__(DockerEngine)
    engine.client = engine.long_client = Client()
    with pytest.raises(DaemonUnavailable) as caught:
        engine.run(RunSpec(image="img", command=("python", "-m", "incontainer.freeze")), log=lambda line: None)
    assert "went away while running python -m incontainer.freeze" in caught.value.message
    assert "rerun" in caught.value.fix

    monkeypatch.setattr(engine, "gpu_runtime", lambda: False)
    image = BuiltImage(spec=None, tag="img", info=ImageInfo("sha256:x", ("img",), {}, 1), base=None, reused=True)
    step = StepConfig(name="freeze", role="train", module="freeze", output=tmp_path / "model")
    with pytest.raises(DaemonUnavailable):
        run_step(engine, Project(tmp_path), step, image)
    assert list(tmp_path.iterdir()) == []  # neither the output nor its staging directory
