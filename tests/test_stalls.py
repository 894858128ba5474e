"""A stalled daemon cannot defeat a time limit: ordinary calls and long ones have their own client
timeouts, the wait for a container ends at its limit plus a grace period (exit 12, the daemon), the
watchdog's kill is bounded and the cleanup does not wait on the stalled daemon again; inside the
container coreutils `timeout` holds the limit too, so a dead host cannot leave it running."""

from __future__ import annotations

import threading

import pytest
import requests

from coldchain.contract import Exit
from coldchain.engine import RunSpec
from coldchain.engine import docker as docker_engine_module
from coldchain.engine.docker import CALL_TIMEOUT_S, GRACE_S, LONG_TIMEOUT_S, DockerEngine, container_kwargs
from coldchain.errors import DaemonUnavailable
from coldchain.owner import PID_LABEL, Owner
from fake_engine import docker_engine_with

SPEC = RunSpec(image="img", command=("python", "-m", "incontainer.steps.freeze"), timeout_s=1800)


class StalledContainer:
    """Every call on it hangs until the request's timeout, as on a daemon that accepts and never answers."""

    id = short_id = "5ta11ed"

    def __init__(self):
        self.asked = []
        self.killed = threading.Event()

    def start(self):
        self.asked.append("start")

    def wait(self, timeout=None):
        self.asked.append(("wait", timeout))
        assert timeout is not None, "an unbounded wait hangs forever on a stalled daemon"
        self.killed.wait(5)  # the watchdog's kill is tried first
        raise requests.exceptions.ReadTimeout("UnixHTTPConnectionPool: Read timed out.")

    def kill(self):
        self.asked.append("kill")
        self.killed.set()
        raise requests.exceptions.ReadTimeout("Read timed out.")  # bounded by the client: not raised over

    def remove(self, force=False):
        self.asked.append("remove")


def test_a_stalled_daemon_ends_the_run_at_its_limit_plus_the_grace_as_a_daemon_error(monkeypatch):
    monkeypatch.setattr(docker_engine_module, "GRACE_S", 0.05)
    container = StalledContainer()
    with pytest.raises(DaemonUnavailable) as caught:
        docker_engine_with(container).run(RunSpec(image="img", command=SPEC.command, timeout_s=0.05))
    assert caught.value.exit_code == Exit.DAEMON == 12
    assert "stalled" in caught.value.message and "restart the Docker daemon" in caught.value.fix
    waits = [entry for entry in container.asked if isinstance(entry, tuple)]
    assert len(waits) == 1 and 0 < waits[0][1] <= 0.05 + 0.05
    # The kill was tried (and its timeout swallowed); the removal is left to the next run's sweep.
    assert "kill" in container.asked and "remove" not in container.asked


def test_a_daemon_that_answers_gets_the_container_removed():
    class Finished(StalledContainer):
        def wait(self, timeout=None):
            self.asked.append(("wait", timeout))
            return {"StatusCode": 124}  # the in-container `timeout` ended it: its host stopped watching

        def logs(self, **kwargs):
            return b""

        def reload(self):
            self.attrs = {"State": {"OOMKilled": False}}

    container = Finished()
    result = docker_engine_with(container).run(SPEC)
    assert result.timed_out and result.exit_code == 124
    assert container.asked[-1] == "remove"
    assert container.asked[1] == ("wait", pytest.approx(SPEC.timeout_s + GRACE_S, abs=5))


def test_the_container_runs_its_command_under_coreutils_timeout_at_the_limit_plus_the_grace():
    kwargs = container_kwargs(SPEC)
    assert kwargs["command"] == ["timeout", "--kill-after=10", str(1800 + GRACE_S), *SPEC.command]
    assert container_kwargs(RunSpec(image="img", command=SPEC.command))["command"] == list(SPEC.command)
    assert kwargs["labels"][PID_LABEL] == str(Owner.current().pid)  # the sweep's mark


class MadeClient:
    """What docker.from_env returns: with no version given it asks the daemon for one (api_version)."""

    def __init__(self, timeout, version=None):
        self.timeout, self.version = timeout, version
        self.api = type("Api", (), {"api_version": version or "1.41"})()


def test_ordinary_and_long_calls_have_their_own_client_timeouts(monkeypatch):
    made = []
    monkeypatch.setattr(docker_engine_module.docker, "from_env", lambda **kwargs: made.append(MadeClient(**kwargs))
                        or made[-1])
    DockerEngine()
    assert [client.timeout for client in made] == [CALL_TIMEOUT_S, LONG_TIMEOUT_S] and CALL_TIMEOUT_S < LONG_TIMEOUT_S
    # Only the ordinary client asks the daemon its API version: a stalled daemon would hold the long
    # client's question for LONG_TIMEOUT_S.
    assert [client.version for client in made] == [None, "1.41"]


def test_a_daemon_that_accepts_and_never_answers_is_called_stalled_at_the_call_timeout(monkeypatch):
    def from_env(timeout, version=None):
        raise docker_engine_module.DockerException("Error while fetching server API version: "
                                                   "UnixHTTPConnectionPool(host='localhost', port=None): Read timed out. "
                                                   f"(read timeout={timeout})")

    monkeypatch.setattr(docker_engine_module.docker, "from_env", from_env)
    with pytest.raises(DaemonUnavailable) as caught:
        DockerEngine(timeout=7)
    assert caught.value.exit_code == Exit.DAEMON
    assert "did not answer within 7 s" in caught.value.message and "stalled" in caught.value.message
    assert "restart the Docker daemon" in caught.value.fix


def test_no_daemon_at_all_is_not_called_stalled(monkeypatch):
    def from_env(timeout, version=None):
        raise docker_engine_module.DockerException("Error while fetching server API version: "
                                                   "('Connection aborted.', FileNotFoundError(2, 'No such file'))")

    monkeypatch.setattr(docker_engine_module.docker, "from_env", from_env)
    with pytest.raises(DaemonUnavailable) as caught:
        DockerEngine()
    assert caught.value.message.startswith("no Docker daemon answers") and "make docker" in caught.value.fix


def test_docker_timeout_reaches_the_engine_from_the_option_and_its_environment_variable(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from coldchain.cli import main

    made = []

    def from_env(timeout, version=None):
        made.append(timeout)
        raise docker_engine_module.DockerException("Read timed out.")

    monkeypatch.setattr(docker_engine_module.docker, "from_env", from_env)
    runner = CliRunner()
    (tmp_path / "run").mkdir()
    arguments = ["freeze", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "model")]
    by_option = runner.invoke(main, [*arguments[:1], "--docker-timeout", "3", *arguments[1:]])
    by_variable = runner.invoke(main, arguments, env={"COLDCHAIN_DOCKER_TIMEOUT": "4"})
    default = runner.invoke(main, arguments, env={"COLDCHAIN_DOCKER_TIMEOUT": None})
    assert made == [3, 4, CALL_TIMEOUT_S]
    assert [result.exit_code for result in (by_option, by_variable, default)] == [Exit.DAEMON] * 3
    assert "did not answer within 3 s" in by_option.output
    assert "COLDCHAIN_DOCKER_TIMEOUT" in runner.invoke(main, ["freeze", "--help"]).output
