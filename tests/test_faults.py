"""A full disk while writing reports: a clear error, the earlier report intact, no temp files.
Simulated with a small tmpfs (needs root, as CI has)."""

from __future__ import annotations

import json
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from coldchain.errors import OutputError
from conftest import IN_CI


@contextmanager
def small_tmpfs(path: Path, size: str):
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("CI must run as root to simulate a full disk with a tmpfs")
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True, shell=False)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, shell=False)


def test_full_disk_keeps_the_previous_report_and_leaves_no_temp_file(tmp_path):
    from coldchain.drift.report import write_reports
    from test_drift import GOOD_REPORT

    with small_tmpfs(tmp_path / "disk", "96k") as disk:
        first = write_reports(GOOD_REPORT(), disk)
        before = first["json"].read_bytes()
        huge = GOOD_REPORT()
        huge["cases"][0]["description"] = "x" * 200_000
        with pytest.raises(OutputError) as caught:
            write_reports(huge, disk)
        assert "the disk is full" in caught.value.message and "drift-report.json" in caught.value.message
        assert first["json"].read_bytes() == before
        assert json.loads(before)["counts"]["cases"] == 1
        assert not [p.name for p in disk.iterdir() if p.name.startswith(".")]

