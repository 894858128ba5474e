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


def engine_with(container) -> DockerEngine:
    class Client:
        class containers:
            @staticmethod
            def create(image, **kwargs):
                return container

    engine = DockerEngine.__new__(DockerEngine)
    engine.client = engine.long_client = Client()
    return engine


def test_a_stalled_daemon_ends_the_run_at_its_limit_plus_the_grace_as_a_daemon_error(monkeypatch):
    monkeypatch.setattr(docker_engine_module, "GRACE_S", 0.05)
    container = StalledContainer()
    with pytest.raises(DaemonUnavailable) as caught:
        engine_with(container).run(RunSpec(image="img", command=SPEC.command, timeout_s=0.05))
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
    result = engine_with(container).run(SPEC)
    assert result.timed_out and result.exit_code == 124
    assert container.asked[-1] == "remove"
    assert container.asked[1] == ("wait", pytest.approx(SPEC.timeout_s + GRACE_S, abs=5))


def test_the_container_runs_its_command_under_coreutils_timeout_at_the_limit_plus_the_grace():
    kwargs = container_kwargs(SPEC)
    assert kwargs["command"] == ["timeout", "--kill-after=10", str(1800 + GRACE_S), *SPEC.command]
    assert container_kwargs(RunSpec(image="img", command=SPEC.command))["command"] == list(SPEC.command)
    assert kwargs["labels"][PID_LABEL] == str(Owner.current().pid)  # the sweep's mark


def test_ordinary_and_long_calls_have_their_own_client_timeouts(monkeypatch):
    made = []
    monkeypatch.setattr(docker_engine_module.docker, "from_env", lambda timeout: made.append(timeout) or object())
    DockerEngine()
    assert made == [CALL_TIMEOUT_S, LONG_TIMEOUT_S] and CALL_TIMEOUT_S < LONG_TIMEOUT_S
