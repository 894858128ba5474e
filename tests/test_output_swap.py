"""A step's output is swapped in under a lock on its folder, and a failed second rename puts the old
result back (rollback) and says so as an output error."""

from __future__ import annotations

import os
import threading

import pytest

from coldchain import fsutil
from coldchain.errors import OutputError
from coldchain.fsutil import output_lock, replace_output


def folder(path, text: str):
    path.mkdir()
    (path / "model.pb").write_text(text)
    return path


def test_a_failed_second_rename_rolls_back_to_the_old_output(tmp_path, monkeypatch):
    destination, produced = folder(tmp_path / "model", "old"), folder(tmp_path / ".model.staging-x", "new")
    real = os.replace
    calls = []

    def failing_second(source, target):
        calls.append(target)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(source, target)

    monkeypatch.setattr(fsutil.os, "replace", failing_second)
    with pytest.raises(OutputError) as caught:
        replace_output(produced, destination, old_name=".model.old-test")
    monkeypatch.setattr(fsutil.os, "replace", real)
    assert "the disk is full" in caught.value.message and str(destination) in caught.value.message
    assert (destination / "model.pb").read_text() == "old", "the previous result is back in place"
    assert not (tmp_path / ".model.old-test").exists()


def test_the_swap_waits_for_the_folders_lock(tmp_path):
    destination, produced = folder(tmp_path / "model", "old"), folder(tmp_path / ".model.staging-x", "new")
    swap = threading.Thread(target=replace_output, args=(produced, destination), kwargs={"old_name": ".old"})
    with output_lock(destination):  # another run is swapping its output into this folder
        swap.start()
        swap.join(timeout=0.5)
        assert swap.is_alive() and (destination / "model.pb").read_text() == "old"
    swap.join(timeout=30)
    assert not swap.is_alive() and (destination / "model.pb").read_text() == "new"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"], "no lock file, no old copy left"
