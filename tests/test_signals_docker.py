"""Real runs of `coldchain freeze` cut short or run side by side: SIGTERM mid-container exits 143 with
the container gone and nothing staged left; SIGKILL leaves both, and the next run's start sweeps them
and succeeds; two freezes into one output directory at once, ROUNDS times, both succeed and leave one
whole model and nothing stray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from coldchain.contract import MANIFEST_FILE, MODEL_FILE
from coldchain.owner import PID_LABEL
from conftest import ROOT

pytestmark = pytest.mark.docker
# Concurrent freeze pairs; each round is about one freeze's time on two cores. CI runs 3, `make faults` 10.
ROUNDS = int(os.environ.get("COLDCHAIN_FAULT_ROUNDS", "3"))


def freeze(run_id: str, tiny_chain, out) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "coldchain", "freeze", "--run", str(tiny_chain / "run"),
                             "--out", str(out)], cwd=ROOT, env=dict(os.environ, COLDCHAIN_PREFIX=run_id),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def containers_of(engine, pid: int) -> list:
    return engine.list_containers(f"{PID_LABEL}={pid}")


def when_its_container_runs(engine, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 600
    while not containers_of(engine, process.pid):
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "no container started"
        time.sleep(0.2)


def whole_model(out) -> None:
    assert (out / MODEL_FILE).is_file() and json.loads((out / MANIFEST_FILE).read_text())["model"]["sha256"]


def test_sigterm_mid_container_exits_143_and_removes_the_container_and_the_staging(docker_engine, run_id, kit_images,
                                                                                   tiny_chain, tmp_path,
                                                                                   record_property):
    process = freeze(run_id, tiny_chain, tmp_path / "model")
    try:
        when_its_container_runs(docker_engine, process)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    record_property("exit_codes", str([process.returncode]))
    assert process.returncode == 143, stderr[-2000:]
    assert "terminated by SIGTERM" in stderr and "Traceback" not in stderr
    assert containers_of(docker_engine, process.pid) == []
    assert list(tmp_path.iterdir()) == [], "neither the output nor its staging directory"


def test_what_a_killed_run_leaves_is_swept_by_the_next_run(docker_engine, run_id, kit_images, tiny_chain, tmp_path,
                                                          record_property):
    out = tmp_path / "model"
    killed = freeze(run_id, tiny_chain, out)
    when_its_container_runs(docker_engine, killed)
    killed.kill()  # SIGKILL: no cleanup can run
    killed.communicate(timeout=60)
    left = [path.name for path in tmp_path.iterdir()]
    assert len(left) == 1 and ".staging-" in left[0], left
    rerun = freeze(run_id, tiny_chain, out)
    _, stderr = rerun.communicate(timeout=900)
    record_property("exit_codes", str([rerun.returncode]))
    assert rerun.returncode == 0, stderr[-3000:]
    assert containers_of(docker_engine, killed.pid) == [], "the dead run's container was swept at start"
    assert [path.name for path in tmp_path.iterdir()] == ["model"]
    whole_model(out)


def test_two_freezes_into_one_output_directory_at_once(docker_engine, run_id, kit_images, tiny_chain, tmp_path,
                                                      record_property):
    out = tmp_path / "model"
    survived, failures, exit_codes = 0, [], []
    for round_number in range(ROUNDS):
        processes = [freeze(run_id, tiny_chain, out) for _ in range(2)]
        results = [process.communicate(timeout=900) for process in processes]
        exit_codes += [process.returncode for process in processes]
        try:
            for process, (_, stderr) in zip(processes, results):
                assert process.returncode == 0, f"round {round_number}: {stderr[-3000:]}"
                assert "internal error" not in stderr
            assert [path.name for path in tmp_path.iterdir()] == ["model"], f"round {round_number}: something stray"
            whole_model(out)
            assert [containers_of(docker_engine, process.pid) for process in processes] == [[], []]
            survived += 1
        except AssertionError as failure:  # the other rounds still count: the figure is n/ROUNDS
            failures.append(str(failure))
    record_property("survived", f"{survived}/{ROUNDS}")
    record_property("exit_codes", str(sorted(set(exit_codes))))
    assert failures == [], f"{survived}/{ROUNDS} rounds survived; first failure: {failures[0]}"
