"""Ctrl-C during a drift test leaves no container running and no half-written report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from coldchain.config import KIT_LABEL
from conftest import ROOT
from pngread import read_png

pytestmark = pytest.mark.docker


def _ours(engine, prefix: str) -> list:
    return [c for c in engine.client.containers.list(all=True, filters={"label": KIT_LABEL}, ignore_removed=True)
            if c.name.startswith(f"{prefix}-")]


def _interruptible() -> None:
    """A job started in the background by a non-interactive shell (as CI runners and `cmd &` do)
    inherits SIGINT ignored, and Python then never raises KeyboardInterrupt: give the child the
    terminal's default, as a user pressing Ctrl-C has."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_kills_the_running_case_and_writes_no_report(docker_engine, run_id, kit_images, tiny_chain, tmp_path):
    out = tmp_path / "drift"
    process = subprocess.Popen(
        [sys.executable, "-m", "coldchain", "drift-test", "--case", "onednn-off", "--case", "one-thread",
         "--model", str(tiny_chain / "model"), "--run", str(tiny_chain / "run"), "--out", str(out)],
        cwd=ROOT, env=dict(os.environ, COLDCHAIN_PREFIX=run_id), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, shell=False, preexec_fn=_interruptible)
    try:
        deadline = time.monotonic() + 600
        while not _ours(docker_engine, run_id):
            assert process.poll() is None, process.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "no drift container started"
            time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr[-2000:]
    assert "interrupted" in stderr
    assert _ours(docker_engine, run_id) == []
    assert not (out / "drift-report.json").exists() and not (out / "drift-junit.xml").exists()


def test_two_drift_tests_at_once_in_one_checkout_do_not_collide(docker_engine, run_id, kit_images, tiny_chain,
                                                                tmp_path):
    """Same checkout, same output directory, overlapping cases: both finish, both reports are whole."""
    out = tmp_path / "drift"
    command = [sys.executable, "-m", "coldchain", "drift-test", "--model", str(tiny_chain / "model"),
               "--run", str(tiny_chain / "run"), "--out", str(out), "--json"]
    environment = dict(os.environ, COLDCHAIN_PREFIX=run_id)
    first = subprocess.Popen(command + ["--case", "infer-cpu", "--case", "onednn-off"], cwd=ROOT, env=environment,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, shell=False)
    second = subprocess.Popen(command + ["--case", "infer-cpu", "--case", "gpu-pinned"], cwd=ROOT, env=environment,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, shell=False)
    outputs = [process.communicate(timeout=1500) for process in (first, second)]
    for process, (stdout, stderr) in zip((first, second), outputs):
        assert process.returncode == 0, stderr[-3000:]
        report = json.loads(stdout)
        assert report["ok"] and report["counts"]["cases"] == 2
    final = json.loads((out / "drift-report.json").read_text())  # whichever finished last, whole
    assert final["counts"]["cases"] == 2
    # The heatmap shows the report: one row per case; infer-cpu, computed with the golden's own numerics,
    # is bit-exact (grey) in every column: the input path's three stages (decode, resize/crop, normalise), the
    # four blocks, logits and probabilities.
    width, height, pixels = read_png(out / "drift-heatmap.png")
    assert (width, height) == (480 + 92 * 9 + 10, 40 + 22 * 2 + 46)
    assert final["cases"][0]["name"] == "infer-cpu" and final["cases"][0]["outcome"] == "bit-exact"
    assert [pixels[40 + 11][480 + 46 + 92 * column] for column in range(9)] == [(225, 225, 225)] * 9
    assert (out / "models" / "gpu-pinned" / "model.pb").is_file()
    assert not [path.name for path in out.iterdir() if path.name.startswith(".")]
    assert not [path.name for path in (out / "models").iterdir() if path.name.startswith(".") and ".lock" not in path.name]
    assert _ours(docker_engine, run_id) == []
