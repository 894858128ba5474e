"""Faults in real containers: a full disk during freeze (exit 16, the host's path), and a step killed for
memory."""

from __future__ import annotations

import pytest

from coldchain.errors import ContainerError
from coldchain.steps.pipeline import StepConfig, run_step
from test_faults import small_tmpfs

pytestmark = pytest.mark.docker


def test_freeze_on_a_full_disk_keeps_the_previous_model(docker_engine, project, run_id, kit_images, tiny_chain,
                                                        tmp_path, record_property):
    with small_tmpfs(tmp_path / "disk", "16m") as disk:
        previous = disk / "model"
        previous.mkdir()
        (previous / "manifest.json").write_text('{"previous": true}')
        step = StepConfig(name="freeze", role="train", module="freeze", output=previous,
                          inputs={"/run": tiny_chain / "run"}, arguments=("--run", "/run"), prefix=run_id, run_id=run_id)
        with pytest.raises(ContainerError) as caught:
            run_step(docker_engine, project, step, kit_images["train"])
        # The output error (exit 16), naming the model directory as the user gave it, not the container's /out.
        message = caught.value.message
        record_property("exit_codes", str([caught.value.exit_code]))
        assert "no space left on device" in message and f"cannot write {previous}/" in message, message
        assert "/out/" not in message and "GB free there" in message
        assert caught.value.exit_code == 16
        assert (previous / "manifest.json").read_text() == '{"previous": true}'
        assert sorted(path.name for path in disk.iterdir()) == ["model"]  # the staging directory is gone


def test_a_step_killed_for_memory_says_so(docker_engine, project, run_id, kit_images, tiny_chain, tmp_path,
                                         record_property):
    step = StepConfig(name="freeze", role="train", module="freeze", output=tmp_path / "model",
                      inputs={"/run": tiny_chain / "run"}, arguments=("--run", "/run"), prefix=run_id, run_id=run_id,
                      memory="96m")
    with pytest.raises(ContainerError) as caught:
        run_step(docker_engine, project, step, kit_images["train"])
    record_property("exit_codes", str([caught.value.exit_code]))
    assert "killed for exceeding its memory limit (96m)" in caught.value.message
    assert caught.value.container_exit == 137
    assert not (tmp_path / "model").exists()
