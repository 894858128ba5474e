"""What the drift test costs warm (every image built, every variant made), and what sharing
containers and sharding save: the matrix with one container per case (--isolate, as before the
speed-up), with shared containers (the default), and as 2 and 3 shards started side by side on this
machine, then merged. Each run is the CLI a user types, as a separate process."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import Project
from ..contract import FLAG_JSON, FLAG_MODEL, FLAG_OUT
from ..drift.report import PHASES, REPORT_JSON
from ..errors import ColdchainError

log = logging.getLogger(__name__)
QUICK_CASES = ("infer-cpu", "onednn-off", "one-thread", "tf2.7-py3.9")


@dataclass(frozen=True)
class DriftBenchOptions:
    model: Path  # make freeze's model (out/model), its variants already made by make drift-test
    out: Path
    quick: bool = False  # four cases and two shards: checks the machinery
    prefix: str = "coldchain"


def _coldchain(project: Project, options: DriftBenchOptions, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "coldchain", *args], cwd=project.root, text=True,
                            env=dict(os.environ, COLDCHAIN_PREFIX=options.prefix),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait(processes: list[subprocess.Popen], what: str) -> list[dict]:
    reports = []
    for process in processes:
        stdout, stderr = process.communicate()
        if process.returncode not in (0, 1):
            raise ColdchainError(f"bench: {what} failed (exit {process.returncode})", log_tail=stderr[-3000:],
                                 fix="run it alone to see why: " + " ".join(process.args[1:]))
        reports.append(json.loads(stdout))
    return reports


def per_case(report: dict) -> dict:
    """Mean seconds per case by phase (drift.report.PHASES), and the total."""
    timed = [case["timing"] for case in report["cases"] if (case.get("timing") or {}).get("case_s") is not None]
    means = {key: round(sum(float(t.get(key) or 0.0) for t in timed) / len(timed), 3) for key, _ in PHASES} \
        if timed else {}
    return {**means, "total_s": round(sum(means.values()), 3), "cases": len(timed),
            "containers": len({(t.get("container_s"), t.get("cases_in_container")) for t in timed})}


def _out(options: DriftBenchOptions, name: str) -> Path:
    """A report directory whose models/ is make drift-test's, so no variant is made again."""
    out = options.out / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    (out / "models").symlink_to((options.model.parent / "drift" / "models").resolve(), target_is_directory=True)
    return out


def bench_drift(project: Project, options: DriftBenchOptions) -> dict:
    if not (options.model.parent / "drift" / REPORT_JSON).is_file():
        raise ColdchainError(f"bench: no {options.model.parent / 'drift' / REPORT_JSON}",
                             fix="run 'make drift-test' first: the benchmark times the drift test warm")
    base = ["drift-test", FLAG_MODEL, str(options.model), FLAG_JSON]
    for case in QUICK_CASES if options.quick else ():
        base += ["--case", case]
    results: dict = {}
    for name, extra in (("isolated", ["--isolate"]), ("shared", [])):
        out = _out(options, name)
        started = time.perf_counter()
        (report,) = _wait([_coldchain(project, options, *base, FLAG_OUT, str(out), *extra)], f"drift-test {name}")
        results[name] = {"wall_s": round(time.perf_counter() - started, 1), "cases_s": report["timing"]["cases_s"],
                         "ok": report["ok"], "per_case": per_case(report)}
        log.info("drift-test %s: %.1f s", name, results[name]["wall_s"])
    for total in (2,) if options.quick else (2, 3):
        out = _out(options, f"shards-{total}")
        started = time.perf_counter()
        reports = _wait([_coldchain(project, options, *base, FLAG_OUT, str(out), "--shard", f"{index}/{total}")
                         for index in range(1, total + 1)], f"{total} shards")
        wall = time.perf_counter() - started
        started = time.perf_counter()
        (merged,) = _wait([_coldchain(project, options, "drift-merge", str(out), FLAG_OUT, str(out / "merged"),
                                      "--no-heatmap", FLAG_JSON)], "drift-merge")
        results[f"shards_{total}"] = {
            "side_by_side_wall_s": round(wall, 1), "merge_wall_s": round(time.perf_counter() - started, 1),
            "merge_s": merged["timing"]["merge_s"], "ok": merged["ok"],
            "shard_cases_s": [report["timing"]["cases_s"] for report in reports],
            "shard_cases": [report["counts"]["cases"] for report in reports]}
        log.info("%d shards side by side: %.1f s", total, wall)
    results["cases"] = len(QUICK_CASES) if options.quick else results["shared"]["per_case"]["cases"]
    results["note"] = ("warm: every image built and every variant made; wall_s is the CLI's whole run (image "
                       "up-to-date checks, cases, reports); shards are started at once on this machine")
    return results
