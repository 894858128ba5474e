#!/usr/bin/env python3
"""Three `make infer` at once on one Docker daemon, from fresh clones: two in one clone (the venv
bootstrap and every out/ swap raced) and one in a second clone. Each must exit 0, the two clones'
predictions must be identical, and nothing stray may be left (no staging or scratch directory, no half
venv, no container). Prints the result as JSON; exit 0 only when every check passed.

Usage: scripts/concurrent-infer.py [--keep]   (too heavy for CI's test stage; `make faults` runs it)"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A short chain: the race is in the bootstrap and the swaps, not in the training. --deterministic makes
# the two clones' models, and so their predictions, comparable on one machine.
MAKE_VARS = ["DATA_ARGS=--classes 3 --train-per-class 12 --val-per-class 4 --size 32 --seed 5",
             "TRAIN_ARGS=--image-size 32 --max-steps 4 --batch-size 8 --log-every 2 --deterministic"]
TIMEOUT_S = 3600
EXPECTED_IN_OUT = ["data", "model", "predictions.jsonl", "run"]
EXPECTED_IGNORED = {".venv", ".venv.lock"}  # what the bootstrap leaves beside the checkout's tracked files
EXPECTED_IN_BUILD = {"base-python-versions.json", "golden-checks"}  # caches, kept on purpose; scratch is not


def clone(into: Path) -> Path:
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(into)], check=True)
    return into


def start(checkout: Path, log: Path) -> subprocess.Popen:
    with log.open("w") as handle:
        return subprocess.Popen(["make", "--no-print-directory", "-C", str(checkout), "infer", *MAKE_VARS],
                                stdout=handle, stderr=subprocess.STDOUT)


def predictions(checkout: Path) -> list:
    path = checkout / "out" / "predictions.jsonl"
    if not path.is_file():
        return []
    text = path.read_text().replace(str(checkout), "<clone>")  # a path a row may name
    return [json.loads(line) for line in text.splitlines()]


def stray(checkout: Path) -> list[str]:
    """Ignored files other than the outputs and the venv (staging, scratch, .venv.new-*, build leftovers)."""
    listed = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain", "--ignored"],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    found = []
    for line in listed:
        name = line[3:].rstrip("/")
        if name.split("/")[0] in EXPECTED_IGNORED or name.split("/")[0] in ("out", "build") or "__pycache__" in name:
            continue
        found.append(line)
    build = checkout / "build"
    found += [f"build/{path.name}" for path in sorted(build.iterdir()) if path.name not in EXPECTED_IN_BUILD] \
        if build.is_dir() else []
    out = checkout / "out"
    entries = sorted(path.name for path in out.iterdir()) if out.is_dir() else []
    found += [f"out/{name}" for name in entries if name not in EXPECTED_IN_OUT and name != ".steps.lock"]
    found += [f"missing out/{name}" for name in EXPECTED_IN_OUT if name not in entries]
    return found


def containers_mounting(directory: Path) -> list[str]:
    """Containers, running or not, with a mount from under `directory`: a run's container outliving it."""
    ids = subprocess.run(["docker", "ps", "-aq"], capture_output=True, text=True, check=True).stdout.split()
    if not ids:
        return []
    inspected = json.loads(subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True).stdout or "[]")
    return [item["Id"][:12] for item in inspected
            if any(str(mount.get("Source", "")).startswith(str(directory)) for mount in item.get("Mounts", []))]


def main(keep: bool) -> int:
    work = Path(tempfile.mkdtemp(prefix="coldchain-concurrent-infer-"))
    started = time.monotonic()
    first, second = clone(work / "a"), clone(work / "b")
    runs = {"a#1": (first, start(first, work / "a1.log")), "a#2": (first, start(first, work / "a2.log")),
            "b#1": (second, start(second, work / "b1.log"))}
    exit_codes = {name: process.wait(timeout=TIMEOUT_S) for name, (_, process) in runs.items()}
    result = {
        "runs": len(runs), "exit_codes": exit_codes,
        "identical_predictions": bool(predictions(first)) and predictions(first) == predictions(second),
        "predictions": len(predictions(first)),
        "stray": {"a": stray(first), "b": stray(second)},
        "containers_left": containers_mounting(work),
        "seconds": round(time.monotonic() - started),
    }
    result["passed"] = (all(code == 0 for code in exit_codes.values()) and result["identical_predictions"]
                        and not any(result["stray"].values()) and not result["containers_left"])
    for name in runs:
        if exit_codes[name] != 0:
            tail = (work / f"{name.replace('#', '')}.log").read_text(errors="replace").splitlines()[-30:]
            print(f"--- {name} (exit {exit_codes[name]}) ---\n" + "\n".join(tail), file=sys.stderr)
    if keep or not result["passed"]:
        result["kept"] = str(work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main(keep="--keep" in sys.argv[1:]))
