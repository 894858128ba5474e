"""SIGTERM and SIGHUP take Ctrl-C's path: the CLI exits 143 / 129 with one line, the step's staging
directory is gone, the running container is removed, and a second signal cannot cut the cleanup short.
Through the fake engine (a container that is "running" when the signal comes) and a fake Docker client."""

from __future__ import annotations

import os
import signal

import pytest

from coldchain.contract import EXIT_MEANINGS, Exit
from coldchain.engine import RunSpec
from coldchain.signals import Terminated, terminating_raises
from fake_engine import docker_engine_with
from test_model_argument import engine, model_dir, run_cli  # noqa: F401 - fixtures: the CLI on the fake engine


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_signal_mid_container_exits_128_plus_its_number_and_leaves_no_staging(engine, model_dir, tmp_path,  # noqa: F811
                                                                                signum, code):
    before = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGHUP)}
    seen = []

    def running(spec):
        seen.append([path.name for path in tmp_path.iterdir() if ".staging-" in path.name])
        os.kill(os.getpid(), signum)  # delivered while the container "runs"
        raise AssertionError("the signal did not end the run")

    engine.run_handler = running
    output = tmp_path / "p.jsonl"
    result = run_cli("infer", "--model", str(model_dir), "--output", str(output), "--input", str(model_dir),
                     "--no-golden-cache")
    assert result.exit_code == code == 128 + signum and code in EXIT_MEANINGS
    assert f"terminated by {signal.Signals(signum).name}" in result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    assert seen and seen[0], "the container ran with its output staged"
    assert [path.name for path in tmp_path.iterdir() if ".staging-" in path.name] == [] and not output.exists()
    # The handlers are the CLI's only while it runs.
    assert {number: signal.getsignal(number) for number in before} == before


def test_the_exit_codes_are_the_shells_reading_of_the_signal():
    assert (Exit.TERMINATED, Exit.HANGUP, Exit.INTERRUPTED) == (128 + signal.SIGTERM, 128 + signal.SIGHUP,
                                                                128 + signal.SIGINT)


def test_a_second_signal_during_cleanup_is_ignored():
    cleaned = []
    with pytest.raises(Terminated) as caught:
        with terminating_raises():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                raise AssertionError("not raised")
            finally:
                os.kill(os.getpid(), signal.SIGHUP)  # a second one while cleaning up: ignored
                cleaned.append(True)
    assert cleaned == [True] and caught.value.exit_code == Exit.TERMINATED
    assert isinstance(caught.value, KeyboardInterrupt), "every Ctrl-C cleanup runs for it too"


class Container:
    """A container that is running when the signal arrives, and records what the engine asks of it."""

    id = short_id = "c0ffee"

    def __init__(self):
        self.asked = []

    def start(self):
        self.asked.append("start")

    def wait(self, timeout=None):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("the signal did not interrupt the wait")

    def remove(self, force=False):
        self.asked.append(("remove", force))

    def kill(self):
        self.asked.append("kill")


def test_the_docker_engine_removes_the_running_container_on_sigterm():
    container = Container()
    engine = docker_engine_with(container)
    with pytest.raises(Terminated):
        with terminating_raises():
            engine.run(RunSpec(image="img", command=("python", "-m", "incontainer.steps.freeze"), timeout_s=600))
    assert container.asked == ["start", ("remove", True)]
