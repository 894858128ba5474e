"""The start-up sweep removes what dead runs left (containers by their owner labels, staging and scratch
directories by their owner-marked names) and nothing else: not a live run's, not another host's, not
an unmarked folder; and a step's own start sweeps the folder it stages in."""

from __future__ import annotations

import os
import subprocess
import sys

from coldchain.config import Project
from coldchain.engine import ContainerInfo, RunResult
from coldchain.owner import Owner, owner_from_labels, owner_from_name, started_ticks
from coldchain.steps.pipeline import StepConfig, run_step
from coldchain.steps.sweep import sweep_containers, sweep_directories
from fake_engine import FakeEngine
from test_model_argument import IMAGE


def dead_owner() -> Owner:
    """The owner a process that has exited would have left."""
    process = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    started = started_ticks(process.pid)
    process.communicate(b"")
    return Owner(process.pid, Owner.current().host, started)


def test_an_owner_is_dead_only_when_its_process_of_this_host_is_gone():
    me = Owner.current()
    assert not me.is_dead()
    assert dead_owner().is_dead()
    assert Owner(me.pid, me.host, me.started + 1).is_dead(), "a reused pid is another process"
    assert not Owner(1, "another-host", 0).is_dead(), "another host's runs are not ours to judge"
    assert owner_from_labels(me.labels()) == me
    assert owner_from_name(f".model.staging-{me.mark}-x1y2") == Owner(me.pid, me.mark.rsplit("x", 1)[1], me.started)
    assert not owner_from_name(f".model.staging-{me.mark}-x1y2").is_dead()


def test_only_dead_runs_directories_are_swept(tmp_path):
    dead, me = dead_owner(), Owner.current()
    other_host = Owner(dead.pid, "another-host", dead.started)
    names = {f".model.staging-{dead.mark}-abc": True, f".model.old-{dead.mark}-1234": True,
             f"context-train-cpu-{dead.mark}-q": True, f".model.staging-{me.mark}-abc": False,
             f".model.staging-{other_host.mark}-abc": False, ".model.staging-unmarked": False, "model": False}
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "file").write_text("x")
    removed = sweep_directories(tmp_path, tmp_path / "missing")
    assert sorted(path.name for path in removed) == sorted(name for name, goes in names.items() if goes)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(name for name, goes in names.items() if not goes)


def test_only_dead_runs_containers_are_swept():
    engine = FakeEngine()
    dead, me = dead_owner(), Owner.current()
    engine.containers = {"dead": ContainerInfo("dead", {"io.coldchain.kit": "coldchain", **dead.labels()}),
                         "live": ContainerInfo("live", {"io.coldchain.kit": "coldchain", **me.labels()}),
                         "far": ContainerInfo("far", Owner(dead.pid, "another-host", dead.started).labels()),
                         "unowned": ContainerInfo("unowned", {"io.coldchain.kit": "coldchain"})}
    assert sweep_containers(engine) == 1
    assert sorted(engine.containers) == ["far", "live", "unowned"]


def test_a_step_sweeps_the_folder_it_stages_in(tmp_path):
    dead = dead_owner()
    stale = tmp_path / f".model.staging-{dead.mark}-abc"
    stale.mkdir()
    engine = FakeEngine()
    engine.run_handler = lambda spec: RunResult(0, "", "")
    step = StepConfig(name="freeze", role="train", module="freeze", output=tmp_path / "model")
    run_step(engine, Project(tmp_path), step, IMAGE)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]
    assert engine.runs[0].labels.get("io.coldchain.run") == "coldchain"
    assert os.path.isdir(tmp_path / "model")


def test_every_command_sweeps_the_checkouts_out_and_build_at_start(tmp_path):
    from click.testing import CliRunner

    from coldchain.cli import main

    (tmp_path / "requirements.in").write_text("")
    (tmp_path / "coldchain").mkdir()
    dead = dead_owner()
    stale = [tmp_path / "out" / f".model.staging-{dead.mark}-a", tmp_path / "build" / f"context-infer-cpu-{dead.mark}-b"]
    live = tmp_path / "build" / f"context-infer-cpu-{Owner.current().mark}-c"
    for path in (*stale, live):
        path.mkdir(parents=True)
    CliRunner().invoke(main, ["lock-check", "--project", str(tmp_path)])  # fails on the empty checkout: no matter
    assert [path.exists() for path in (*stale, live)] == [False, False, True]
