"""`make faults`' bookkeeping, without a daemon: each figure counts the tests it names (n/n, skips
apart), a rounds test reports its own n/ROUNDS, and concurrent-infer names what a run left behind."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess

import pytest

from conftest import ROOT


def script(name: str):
    spec = importlib.util.spec_from_file_location(name.replace("-", "_"), ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_figure_counts_its_tests_and_a_rounds_test_reports_its_own_count(monkeypatch):
    faults = script("faults")
    monkeypatch.setattr(faults, "FAULTS", (("rounds", "tests/a.py::test_rounds"), ("hostile", "tests/test_h"),
                                           ("none ran", "tests/b.py::")))
    tests = {
        "tests/a.py::test_rounds": {"outcome": "failed", "properties": {"survived": "9/10", "exit_codes": "[0, 70]"}},
        "tests/test_h.py::test_one": {"outcome": "passed", "properties": {"exit_codes": "[2]"}},
        "tests/test_h_docker.py::test_two[x]": {"outcome": "failed", "properties": {}},
        "tests/test_h_docker.py::test_two[y]": {"outcome": "passed", "properties": {}},
        "tests/b.py::test_skipped": {"outcome": "skipped", "properties": {}},
    }
    rows = {row["fault"]: row for row in faults.figures(tests)}
    assert rows["rounds"]["survived"] == "9/10" and rows["rounds"]["exit_codes"] == [0, 70]
    assert rows["hostile"]["survived"] == "2/3" and rows["hostile"]["exit_codes"] == [2]
    assert rows["none ran"] == {"fault": "none ran", "tests": "tests/b.py::", "skipped": 1, "survived": "0/0"}


def test_every_figure_names_tests_that_exist():
    faults = script("faults")
    for _, prefix in faults.FAULTS:
        path, _, function = prefix.partition("::")
        matching = list(ROOT.glob(path + "*.py")) if not path.endswith(".py") else [ROOT / path]
        assert matching and all(found.is_file() for found in matching), prefix
        assert all(f"def {function}" in found.read_text() for found in matching), prefix


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_concurrent_infer_names_what_a_run_left_behind(tmp_path):
    concurrent = script("concurrent-infer")
    checkout = tmp_path / "clone"
    checkout.mkdir()
    shutil.copy2(ROOT / ".gitignore", checkout / ".gitignore")
    subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    (checkout / "coldchain").mkdir()
    (checkout / "coldchain" / "__init__.py").write_text("")
    subprocess.run(["git", "-C", str(checkout), "add", ".gitignore", "coldchain"], check=True)
    subprocess.run(["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit",
                    "-qm", "fresh clone"], check=True)
    for name in ("out/data", "out/run", "out/model", ".venv/bin", "coldchain/__pycache__"):
        (checkout / name).mkdir(parents=True, exist_ok=True)
        (checkout / name / "file").write_text("x")
    (checkout / "out" / "predictions.jsonl").write_text(json.dumps({"image": f"{checkout}/out/data/val/1.png"}) + "\n")
    (checkout / ".venv.lock").write_text("")
    (checkout / "build" / "golden-checks").mkdir(parents=True)
    (checkout / "build" / "golden-checks" / "a.json").write_text("{}")
    assert concurrent.stray(checkout) == []
    assert concurrent.predictions(checkout) == [{"image": "<clone>/out/data/val/1.png"}]
    (checkout / "out" / ".model.staging-x").mkdir()
    (checkout / ".venv.new-123").mkdir()
    (checkout / ".venv.new-123" / "file").write_text("x")
    (checkout / "out" / "run").rename(checkout / "out" / "elsewhere")
    (checkout / "build" / "context-train-cpu-x").mkdir()
    left = concurrent.stray(checkout)
    assert "!! .venv.new-123/" in left and "out/.model.staging-x" in left and "out/elsewhere" in left
    assert "missing out/run" in left and "build/context-train-cpu-x" in left
