"""Write failures are the user's disk, not a coldchain bug: on the host every mkdir, mkdtemp, rename and
write of a step's output is an OutputError (exit 16) naming the path and the free space there, with the
earlier output kept; in a container ENOSPC, EROFS and EACCES on an output exit 16 too and name the
host's path, not the mount point; the kept golden check is best-effort. A full disk is simulated by
making the os functions raise OSError(ENOSPC)."""

from __future__ import annotations

import errno
import json
import os
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from coldchain import contract
from coldchain.cli import main
from coldchain.contract import Exit
from coldchain.errors import OutputError
from coldchain.fsutil import atomic_write_text
from coldchain.steps.golden_cache import remember
from conftest import ROOT
from fake_engine import FakeEngine
from test_infer import SUMMARY, engine, model, pictures, project  # noqa: F401 - infer's fixtures
from test_pipeline import IMAGE, infer_step, inputs, writes  # noqa: F401

sys.path.insert(0, str(ROOT / "scripts"))
from incontainer import common  # noqa: E402

FULL = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def assert_names_path_and_space(error: OutputError, path: Path) -> None:
    assert error.exit_code == Exit.OUTPUT == 16
    assert str(path) in error.message and "the disk is full" in error.message and "GB free there" in error.message


# --- the host ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["mkdir", "mkdtemp", "rename"])
def test_a_full_disk_during_a_step_is_an_output_error_and_the_earlier_output_stays(inputs, monkeypatch, where):
    from coldchain.steps.pipeline import run_step

    step = infer_step(inputs)
    step.output.write_text("earlier\n")
    engine = FakeEngine()
    engine.run_handler = writes("predictions.jsonl", "new\n")
    target = {"mkdir": "pathlib.Path.mkdir", "mkdtemp": "tempfile.mkdtemp", "rename": "os.replace"}[where]
    monkeypatch.setattr(target, disk_full)
    with pytest.raises(OutputError) as caught:
        run_step(engine, None, step, IMAGE)
    assert_names_path_and_space(caught.value, step.output)
    assert step.output.read_text() == "earlier\n"
    assert not [path.name for path in inputs.iterdir() if ".staging-" in path.name]


def test_a_failed_directory_swap_puts_the_earlier_output_back(inputs, monkeypatch):
    from coldchain.steps.pipeline import run_step

    step = infer_step(inputs, name="freeze", output=inputs / "model-out", output_is_file=False)
    step.output.mkdir()
    (step.output / "model.pb").write_text("earlier")
    engine = FakeEngine()
    engine.run_handler = writes("model.pb", "new")
    real_replace, calls = os.replace, []

    def second_rename_fails(source, destination):
        calls.append(source)
        if len(calls) == 2:  # the new output into place, after the earlier one moved aside
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_replace(source, destination)

    monkeypatch.setattr("os.replace", second_rename_fails)
    with pytest.raises(OutputError):
        run_step(engine, None, step, IMAGE)
    assert (step.output / "model.pb").read_text() == "earlier"


def test_a_full_disk_during_an_atomic_write_keeps_the_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    target.write_text("earlier")
    monkeypatch.setattr("os.fsync", disk_full)
    with pytest.raises(OutputError) as caught:
        atomic_write_text(target, "new")
    assert_names_path_and_space(caught.value, target)
    assert target.read_text() == "earlier" and [path.name for path in tmp_path.iterdir()] == ["report.json"]


def test_a_read_only_output_is_named_as_such(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr("tempfile.mkstemp", read_only)
    with pytest.raises(OutputError) as caught:
        atomic_write_text(tmp_path / "x.json", "{}")
    assert "Read-only file system" in caught.value.message and caught.value.exit_code == 16


def test_a_write_no_step_wrapped_is_still_exit_16_not_an_internal_error(project, model, pictures, engine,  # noqa: F811
                                                                        monkeypatch, tmp_path):
    monkeypatch.setattr("coldchain.steps.infer.predict",
                        lambda *args: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left", str(tmp_path / "x"))))
    result = CliRunner().invoke(main, ["infer", "--project", str(project.root), "--model", str(model), str(pictures)],
                                catch_exceptions=False)
    assert result.exit_code == 16 and "internal error" not in result.output
    assert str(tmp_path / "x") in result.output and "GB free there" in result.output


def test_a_full_disk_for_the_kept_golden_check_only_warns_and_infer_succeeds(project, model, pictures,  # noqa: F811
                                                                             engine, monkeypatch, caplog):
    from coldchain.steps import golden_cache

    monkeypatch.setattr(golden_cache, "atomic_write_text", lambda *args: (_ for _ in ()).throw(
        OutputError.of(Path("/kept"), OSError(errno.ENOSPC, "full"))))
    output = project.root / "p.jsonl"
    result = CliRunner().invoke(main, ["infer", "--project", str(project.root), "--model", str(model), str(pictures),
                                       "--output", str(output)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert output.is_file() and json.loads(result.stdout)["images"] == SUMMARY["images"]
    assert "golden check was not kept" in caplog.text


def test_remember_survives_an_unwritable_cache_directory(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("pathlib.Path.mkdir", disk_full)
    remember(tmp_path / "cache" / "x.json", {"golden": {"ok": True}, "model": "ab"})
    assert "golden check was not kept" in caplog.text and not (tmp_path / "cache").exists()


# --- the container (incontainer.common: no TensorFlow) ------------------------------------------------
@pytest.fixture
def host_map(monkeypatch, tmp_path):
    mapping = {contract.MOUNT_OUT: "/home/user/results/model", contract.MOUNT_MODEL: "/home/user/models/m"}
    monkeypatch.setenv(contract.ENV_PATH_MAP, json.dumps(mapping))
    return mapping


def run_main_with(error: BaseException, capsys) -> tuple[int, str]:
    def entry(argv):
        raise error
    code = common.run_main(entry, [])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("number", [errno.ENOSPC, errno.EROFS, errno.EDQUOT])
def test_in_the_container_a_write_failure_exits_16_naming_the_host_path(host_map, capsys, number):
    code, err = run_main_with(OSError(number, os.strerror(number), f"{contract.MOUNT_OUT}/model.pb"), capsys)
    assert code == Exit.OUTPUT == 16
    line = contract.last_error(err)
    assert "/home/user/results/model/model.pb" in line and f"{contract.MOUNT_OUT}/" not in line and "free there" in line
    assert "internal error" not in err and "Traceback" not in err


def test_in_the_container_permission_counts_only_on_an_output(host_map, capsys):
    code, err = run_main_with(PermissionError(errno.EACCES, "Permission denied", f"{contract.MOUNT_OUT}/x"), capsys)
    assert code == Exit.OUTPUT and "/home/user/results/model/x" in contract.last_error(err)
    # Reading an input it may not read is no output failure (nor the disk's): the kit's unclassified error.
    code, err = run_main_with(PermissionError(errno.EACCES, "Permission denied", f"{contract.MOUNT_MODEL}/a"), capsys)
    assert code == Exit.CONTAINER


def test_in_the_container_tensorflows_own_write_errors_count_too(host_map, capsys):
    code, err = run_main_with(RuntimeError("ResourceExhaustedError: /out/ckpt-1.data; No space left on device"), capsys)
    assert code == Exit.OUTPUT and "/home/user/results/model" in contract.last_error(err)


def test_in_the_container_an_atomic_write_on_a_full_disk_is_an_output_failure(host_map, monkeypatch, tmp_path):
    monkeypatch.setattr(common.os, "fsync", disk_full)
    target = tmp_path / "model.pb"
    with pytest.raises(common.OutputFailed) as caught:
        common.atomic_write_bytes(str(target), b"x" * 10)
    assert caught.value.exit_code == Exit.OUTPUT and str(target) in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_the_host_passes_the_output_mount_as_the_users_path(inputs):
    from coldchain.steps.pipeline import run_step

    engine = FakeEngine()
    engine.run_handler = writes("predictions.jsonl", "{}\n")
    run_step(engine, None, infer_step(inputs), IMAGE)
    mapping = json.loads(engine.runs[0].environment[contract.ENV_PATH_MAP])
    assert mapping[contract.MOUNT_OUT] == str(inputs)  # predictions.jsonl's folder, not the staging directory
    assert contract.map_paths(f"{contract.MOUNT_OUT}/predictions.jsonl", mapping) == str(inputs / "predictions.jsonl")
