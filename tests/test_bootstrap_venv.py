"""scripts/bootstrap-venv.sh, offline on a one-wheel lock: two runs at once make one venv and neither
removes it under the other; a new lock builds the next venv beside the old one and renames it in."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bootstrap-venv.sh"


def tiny_wheel(folder: Path, version: str) -> Path:
    """A pure-Python wheel, made by hand: a module and a console script (whose #! line pip writes)."""
    name = f"cctiny-{version}"
    files = {"cctiny.py": f"VERSION = {version!r}\ndef main():\n    print(VERSION)\n",
             f"{name}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: cctiny\nVersion: {version}\n",
             f"{name}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
             f"{name}.dist-info/entry_points.txt": "[console_scripts]\ncctiny = cctiny:main\n"}
    record = ""
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record += f"{path},sha256={digest},{len(text.encode())}\n"
    files[f"{name}.dist-info/RECORD"] = record + f"{name}.dist-info/RECORD,,\n"
    wheel = folder / f"cctiny-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def tiny_lock(folder: Path, version: str) -> Path:
    wheel = tiny_wheel(folder, version)
    lock = folder / "requirements-tiny.lock"
    lock.write_text(f"cctiny @ file://{wheel} --hash=sha256:{hashlib.sha256(wheel.read_bytes()).hexdigest()}\n")
    return lock


def start(venv: Path, lock: Path) -> subprocess.Popen:
    return subprocess.Popen(["bash", str(SCRIPT), sys.executable, str(venv), str(lock)], cwd=venv.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> str:
    _, stderr = process.communicate(timeout=150)
    assert process.returncode == 0, stderr
    return stderr


def strays(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if ".new-" in path.name)


def test_two_bootstraps_at_once_make_one_venv_and_a_new_lock_swaps_it_in(tmp_path):
    venv = tmp_path / ".venv"
    lock = tiny_lock(tmp_path, "1.0")
    outputs = [finish(process) for process in [start(venv, lock), start(venv, lock)]]
    # One built it; the other waited on the lock and found it made from this lock, instead of removing it.
    assert sum("by an earlier run" in output for output in outputs) == 1, outputs
    script = venv / "bin" / "cctiny"
    assert script.read_text().startswith(f"#!{venv}/bin/python"), "the #! line names the final path, not the build's"
    assert subprocess.run([str(script)], capture_output=True, text=True, check=True).stdout == "1.0\n"
    assert strays(tmp_path) == []

    # A running process keeps the venv it started from: the old one is moved aside, not removed.
    marker = venv / "in-use"
    marker.write_text("a run of the old venv")
    finish(start(venv, tiny_lock(tmp_path, "2.0")))
    assert subprocess.run([str(script)], capture_output=True, text=True, check=True).stdout == "2.0\n"
    moved = [path for path in tmp_path.iterdir() if path.name.startswith(".venv.old-")]
    assert len(moved) == 1 and (moved[0] / "in-use").is_file()
    assert strays(tmp_path) == []
