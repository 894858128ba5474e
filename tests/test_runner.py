"""The one runner for in-container modules, against the fake engine: every failure becomes the kit's
error with its exit code (a hang, a memory kill, the container's own error line, a crash)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from coldchain.contract import ENV_PATH_MAP, MODULES, Exit, error_line
from coldchain.engine import RunResult
from coldchain.errors import ContainerError, ContainerTimeout
from coldchain.steps.runner import Image, ModuleRun, progress, run_module
from fake_engine import FakeEngine

IMAGE = Image("sha256:abc", "t-infer:cpu", {"io.coldchain.lock.sha256": "f00d"})


def run(result: RunResult, **changes) -> ContainerError:
    engine = FakeEngine()
    engine.run_handler = lambda spec: result
    module_run = ModuleRun(image=IMAGE, module="probe", what="drift case x", inputs={"/model": Path("/home/u/model")},
                           timeout_s=5.0, **changes)
    with pytest.raises(ContainerError) as caught:
        run_module(engine, module_run)
    (spec,) = engine.runs
    assert spec.command[:3] == ("python", "-m", MODULES["probe"]) and spec.timeout_s == 5.0
    assert json.loads(spec.environment[ENV_PATH_MAP]) == {"/model": "/home/u/model"}
    return caught.value


def test_a_hung_container_is_named_with_its_step_and_image():
    error = run(RunResult(137, "", "probe: importing\n", timed_out=True))
    assert isinstance(error, ContainerTimeout) and error.exit_code == Exit.TIMEOUT
    assert "drift case x" in error.message and "t-infer:cpu" in error.message and "5 s" in error.message
    assert "--timeout" in error.fix and "probe: importing" in error.log_tail


def test_a_memory_kill_says_so():
    error = run(RunResult(137, "", "", oom_killed=True), memory="96m")
    assert error.exit_code == Exit.OUT_OF_MEMORY and "memory limit (96m)" in error.message


def test_the_containers_error_line_and_exit_code_reach_the_user():
    error = run(RunResult(Exit.GOLDEN_MISMATCH, "", "progress\n" + error_line("golden probe failed: first divergence "
                                                                               "at block2") + "\n"))
    assert error.exit_code == Exit.GOLDEN_MISMATCH and error.container_exit == Exit.GOLDEN_MISMATCH
    assert error.message == "drift case x: golden probe failed: first divergence at block2"
    assert error.log_tail is None, "a classified error is one message, not a log dump"


def test_an_unclassified_crash_keeps_the_log_tail_and_its_own_code():
    error = run(RunResult(139, "", "Segmentation fault\n"))
    assert error.exit_code == Exit.CONTAINER and "exit 139" in error.message and "Segmentation fault" in error.log_tail


def test_exit_codes_have_one_meaning_each():
    codes = [value for name, value in vars(Exit).items() if not name.startswith("_")]
    assert len(codes) == len(set(codes))


@pytest.mark.parametrize("root", [True, False], ids=["as-root", "as-a-user"])
def test_one_container_user_for_runs_and_the_paths_handed_to_them(tmp_path, monkeypatch, root):
    from coldchain.steps import runner

    chowned = []
    monkeypatch.setattr(runner.os, "geteuid", lambda: 0 if root else 1000)
    monkeypatch.setattr(runner.os, "getuid", lambda: 1000)
    monkeypatch.setattr(runner.os, "getgid", lambda: 100)
    monkeypatch.setattr(runner.os, "chown", lambda path, uid, gid: chowned.append((path, uid, gid)))
    runner.hand_to_container_user(tmp_path, tmp_path / "a")
    if root:
        assert runner.container_user() == runner.CONTAINER_USER == "10001:10001"
        assert chowned == [(tmp_path, 10001, 10001), (tmp_path / "a", 10001, 10001)]
    else:
        assert runner.container_user() == "1000:100"
        assert chowned == []
    spec = runner.spec_for(ModuleRun(image=IMAGE, module="probe"))
    assert spec.user == runner.container_user()


def test_every_steps_progress_shows_at_the_default_level_and_tensorflows_chatter_does_not(caplog):
    caplog.set_level(logging.DEBUG, logger="coldchain")
    sink = progress("convert")
    for line in ("convert: onnxruntime artefact written", "bench_infer: batch 1: 9 images/s", "freeze: wrote x",
                 "2024-01-01 I tensorflow/core/platform/cpu_feature_guard.cc:182] This TensorFlow binary is"):
        sink(line)
    levels = {record.getMessage().split(" | ", 1)[1].split(":", 1)[0]: record.levelno for record in caplog.records}
    assert levels == {"convert": logging.INFO, "bench_infer": logging.INFO, "freeze": logging.INFO,
                      "2024-01-01 I tensorflow/core/platform/cpu_feature_guard.cc": logging.DEBUG}
