"""A real daemon that stalls or dies under a real `coldchain freeze`: a private dockerd (its own socket
and data root: the shared daemon is never touched) is stopped with SIGSTOP, or killed with SIGKILL
while the command waits on it. Either way the command ends with exit 12 and one message, no traceback,
and nothing of it is left: no output, no staging directory, no container."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from coldchain.contract import Exit
from coldchain.engine.docker import GRACE_S
from coldchain.owner import PID_LABEL
from conftest import ROOT
from private_daemon import PrivateDaemon, connected_unix_sockets, usable

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]
STALL_TIMEOUT_S = 5  # --docker-timeout for the stalled daemon: the default 120 s would be the same test, slower


@pytest.fixture
def private_daemon(tmp_path):
    reason = usable()
    if reason:
        pytest.skip(reason)
    daemon = PrivateDaemon(tmp_path / "daemon-data")
    try:  # cleanup is owed from the moment the process may exist
        daemon.start()
        yield daemon
    finally:
        daemon.close()


def freeze_against(daemon: PrivateDaemon, run_id: str, tmp_path, docker_timeout_s: float) -> subprocess.Popen:
    (tmp_path / "work" / "run").mkdir(parents=True)
    return subprocess.Popen(
        [sys.executable, "-m", "coldchain", "freeze", "--run", str(tmp_path / "work" / "run"),
         "--out", str(tmp_path / "work" / "model")], cwd=ROOT,
        env=dict(os.environ, DOCKER_HOST=daemon.host, COLDCHAIN_PREFIX=run_id,
                 COLDCHAIN_DOCKER_TIMEOUT=str(docker_timeout_s)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def nothing_left(process: subprocess.Popen, tmp_path, docker_engine) -> None:
    assert sorted(path.name for path in (tmp_path / "work").iterdir()) == ["run"], "no output, no staging"
    assert docker_engine.client.containers.list(all=True, filters={"label": f"{PID_LABEL}={process.pid}"}) == [], \
        "the shared daemon was never asked"


def test_a_stalled_daemon_ends_the_command_at_the_call_timeout_with_exit_12(private_daemon, docker_engine, run_id,
                                                                            tmp_path, record_property):
    private_daemon.stop()
    process = freeze_against(private_daemon, run_id, tmp_path, STALL_TIMEOUT_S)
    try:
        # The promise: the call's limit plus the grace period, never the daemon's whim.
        _, stderr = process.communicate(timeout=STALL_TIMEOUT_S + GRACE_S)
    finally:
        if process.poll() is None:
            process.kill()
    record_property("exit_codes", str([process.returncode]))
    assert process.returncode == Exit.DAEMON, stderr[-2000:]
    assert f"did not answer within {STALL_TIMEOUT_S} s" in stderr and "stalled" in stderr, stderr[-2000:]
    assert "restart the Docker daemon" in stderr and "Traceback" not in stderr
    nothing_left(process, tmp_path, docker_engine)
    private_daemon.resume()
    assert private_daemon.client().containers.list(all=True) == [], "the stalled daemon was given nothing to run"


def test_a_daemon_killed_while_the_command_waits_on_it_ends_the_command_with_exit_12(private_daemon, docker_engine,
                                                                                     run_id, tmp_path,
                                                                                     record_property):
    private_daemon.stop()
    # A call timeout the test will not reach: the command must end because the daemon died, not by timing out.
    process = freeze_against(private_daemon, run_id, tmp_path, 600)
    try:
        deadline = time.monotonic() + 120
        while connected_unix_sockets(process.pid) == 0:  # its request sits in the stopped daemon's backlog
            assert process.poll() is None, process.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the command never connected to the daemon"
            time.sleep(0.1)
        private_daemon.kill()
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    record_property("exit_codes", str([process.returncode]))
    assert process.returncode == Exit.DAEMON, stderr[-2000:]
    assert "Docker daemon" in stderr and "stalled" not in stderr, stderr[-2000:]
    assert "make docker" in stderr and "Traceback" not in stderr
    nothing_left(process, tmp_path, docker_engine)
