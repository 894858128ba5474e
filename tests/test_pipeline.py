"""Pipeline steps against the fake engine: hardening of every container, outputs replaced only
on success, and container failures turned into messages about the user's files."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from coldchain.config import IMAGES
from coldchain.contract import map_paths
from coldchain.engine import ImageInfo, RunResult
from coldchain.errors import ContainerError, UsageError
from coldchain.environments.images import BuiltImage
from coldchain.environments.bases import ResolvedBase
from coldchain.steps.pipeline import StepConfig, freeze_step, run_step
from fake_engine import FakeEngine

IMAGE = BuiltImage(IMAGES["infer-cpu"], "t-infer:cpu", ImageInfo("sha256:abc", ("t-infer:cpu",),
                   {"io.coldchain.lock.sha256": "f00d"}, 1), ResolvedBase("b", "sha256:b", "local", "3.11.2"), False)


def out_mount(spec) -> Path:
    return next(m.source for m in spec.mounts if m.target == "/out")


def writes(filename: str, text: str):
    def handler(spec):
        (out_mount(spec) / filename).write_text(text)
        return RunResult(0, '{"ok": true}\n', "")
    return handler


@pytest.fixture
def inputs(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "images").mkdir()
    return tmp_path


def infer_step(root, **changes):
    config = dict(name="infer", role="infer", module="infer", output=root / "predictions.jsonl",
                  inputs={"/model": root / "model", "/inputs/0": root / "images"},
                  arguments=("--model", "/model", "/inputs/0"))
    config.update(changes)
    return StepConfig(**config)


def test_every_container_is_hardened(project, inputs):
    engine = FakeEngine()
    engine.run_handler = writes("predictions.jsonl", "{}\n")
    run_step(engine, project, infer_step(inputs), IMAGE)
    (spec,) = engine.runs
    assert spec.network == "none" and spec.read_only_root
    assert spec.user and not spec.user.startswith("0:") and spec.user != "0"
    assert spec.mem_limit and spec.pids_limit
    assert {m.target: m.read_only for m in spec.mounts} == {"/model": True, "/inputs/0": True, "/out": False}
    # The output mount is a staging directory; messages name the place the user asked for instead.
    assert json.loads(spec.environment["COLDCHAIN_PATH_MAP"]) == {"/model": str(inputs / "model"),
                                                                   "/inputs/0": str(inputs / "images"),
                                                                   "/out": str(inputs)}
    assert spec.environment["COLDCHAIN_LOCK_SHA256"] == "f00d"


def test_output_appears_only_when_the_step_succeeds(project, inputs):
    engine = FakeEngine()
    engine.run_handler = writes("predictions.jsonl", "new\n")
    output = inputs / "predictions.jsonl"
    output.write_text("old\n")
    run_step(engine, project, infer_step(inputs), IMAGE)
    assert output.read_text() == "new\n"

    def fails(spec):
        (out_mount(spec) / "predictions.jsonl").write_text("half")
        # As a real container does: it names the user's files from the path map the host passed.
        message = map_paths("/inputs/0/cat.png is not an image (cannot identify image file)",
                            json.loads(spec.environment["COLDCHAIN_PATH_MAP"]))
        return RunResult(2, "", f"coldchain: error: {message}\n")

    engine.run_handler = fails
    with pytest.raises(ContainerError) as caught:
        run_step(engine, project, infer_step(inputs), IMAGE)
    assert output.read_text() == "new\n", "a failed step must not touch the previous result"
    assert caught.value.exit_code == 2 and caught.value.container_exit == 2
    assert caught.value.message == f"infer: {inputs / 'images'}/cat.png is not an image (cannot identify image file)"
    assert not [p for p in inputs.iterdir() if p.name.startswith(".predictions")], "staging must be cleaned up"


def test_directory_output_is_swapped_whole(project, inputs):
    engine = FakeEngine()
    engine.run_handler = writes("manifest.json", "{}")
    output = inputs / "modelout"
    output.mkdir()
    (output / "stale.txt").write_text("old")
    run_step(engine, project, StepConfig(name="freeze", role="train", module="freeze", output=output,
                                         inputs={"/run": inputs / "model"}), IMAGE)
    assert sorted(p.name for p in output.iterdir()) == ["manifest.json"]


def test_oom_kill_is_reported_as_such(project, inputs):
    engine = FakeEngine()
    engine.run_handler = lambda spec: RunResult(137, "", "Killed\n", oom_killed=True)
    with pytest.raises(ContainerError) as caught:
        run_step(engine, project, infer_step(inputs, memory="1g"), IMAGE)
    assert "memory limit (1g)" in caught.value.message
    assert "--memory" in caught.value.fix


def test_missing_input_fails_before_any_container(project, inputs):
    engine = FakeEngine()
    with pytest.raises(UsageError, match="nope: not found"):
        run_step(engine, project, infer_step(inputs, inputs={"/model": inputs / "nope"}), IMAGE)
    assert engine.runs == []


def test_freeze_step_mounts_the_run_and_points_freeze_at_it(tmp_path):
    step = freeze_step(tmp_path / "run", tmp_path / "model", ("--training-mode",), prefix="p", run_id="r", timeout_s=5.0)
    assert (step.name, step.role, step.module, step.output) == ("freeze", "train", "freeze", tmp_path / "model")
    assert step.inputs == {"/run": tmp_path / "run"} and step.arguments == ("--run", "/run", "--training-mode")
    assert (step.prefix, step.run_id, step.timeout_s, step.memory, step.writes_file) == ("p", "r", 5.0, "8g", False)


def test_finish_runs_on_the_staged_output_and_a_failure_keeps_the_old_one(project, inputs):
    """freeze/adopt/reexport sign their directory this way: before the rename, or not at all."""
    engine = FakeEngine()
    engine.run_handler = writes("manifest.json", "{}")
    output = inputs / "modelout"
    output.mkdir()
    (output / "stale.txt").write_text("old")
    seen = []

    def finish(directory: Path) -> None:
        seen.append(sorted(p.name for p in directory.iterdir()))
        (directory / "model.sig").write_text("signed")

    step = StepConfig(name="freeze", role="train", module="freeze", output=output, inputs={"/run": inputs / "model"},
                      finish=finish)
    run_step(engine, project, step, IMAGE)
    assert seen == [["manifest.json"]] and sorted(p.name for p in output.iterdir()) == ["manifest.json", "model.sig"]

    def fails(directory: Path) -> None:
        raise UsageError("key.pem: cannot sign with this key")

    with pytest.raises(UsageError):
        run_step(engine, project, replace(step, finish=fails), IMAGE)
    assert sorted(p.name for p in output.iterdir()) == ["manifest.json", "model.sig"]
    assert [p.name for p in inputs.iterdir() if "staging" in p.name] == []
