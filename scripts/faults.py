#!/usr/bin/env python3
"""`make faults`: the fault suite with more rounds than CI runs, and three concurrent `make infer` from
fresh clones, written to bench/faults.json (date, CPU, each fault's n/n survived and exit codes), the
figures behind the README's "Faults survived" table. Needs a Docker daemon; takes about half an hour
on two cores.

Usage: .venv/bin/python scripts/faults.py [--rounds N] [--skip-infer | --infer-only] [--out FILE]"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# (figure, test node id prefix): every test whose id starts with the prefix counts towards the figure.
FAULTS = (  # the cheap ones first: a run cut short still has them
    ("daemon stalled (SIGSTOP) while a container runs: exit 12 at its limit plus the grace; the container ends",
     "tests/test_daemon_faults_docker.py::test_a_daemon_stalled"),
    ("daemon stalled (SIGSTOP) before a freeze's first call: exit 12 at the call timeout",
     "tests/test_daemon_faults_docker.py::test_a_stalled_daemon"),
    ("daemon killed (SIGKILL) while a freeze or a container run waits on it: exit 12",
     "tests/test_daemon_faults_docker.py::test_a_daemon_killed"),
    ("disk full or read-only on the host: exit 16, nothing replaced", "tests/test_output_errors.py::"),
    ("disk full writing a report: previous report kept", "tests/test_faults.py::"),
    ("hostile model directories: refused with exit 2 naming the file", "tests/test_hostile"),
    ("requirement files (pip-compile, index options, URLs)", "tests/test_user_requirements.py::"),
    ("SIGTERM mid-freeze: container and staging removed, exit 143",
     "tests/test_signals_docker.py::test_sigterm_mid_container"),
    ("SIGKILL mid-freeze: the next run sweeps what it left",
     "tests/test_signals_docker.py::test_what_a_killed_run_leaves"),
    ("two concurrent freezes into one output directory (rounds)",
     "tests/test_signals_docker.py::test_two_freezes_into_one_output_directory"),
    ("disk full in the container: exit 16, previous model kept",
     "tests/test_faults_docker.py::test_freeze_on_a_full_disk"),
    ("container killed for memory: said so", "tests/test_faults_docker.py::test_a_step_killed_for_memory"),
    ("Ctrl-C mid drift-test, and two drift-tests at once", "tests/test_interrupt_docker.py::"),
)


class Collector:
    """Each test's outcome and the properties it recorded (record_property: survived, exit_codes)."""

    def __init__(self, on_update=lambda tests: None):
        self.tests: dict[str, dict] = {}
        self.on_update = on_update  # each finished test is written at once: a cut-short run keeps its figures

    def pytest_runtest_logreport(self, report):
        entry = self.tests.setdefault(report.nodeid, {"outcome": "passed", "properties": {}})
        entry["properties"].update(dict(report.user_properties))
        if report.failed:
            entry["outcome"] = "failed"
        elif report.skipped and entry["outcome"] == "passed":
            entry["outcome"] = "skipped"
        if report.when == "teardown":
            self.on_update(self.tests)


def figures(tests: dict[str, dict]) -> list[dict]:
    rows = []
    for label, prefix in FAULTS:
        matched = {node: entry for node, entry in tests.items() if node.startswith(prefix)}
        ran = [entry for entry in matched.values() if entry["outcome"] != "skipped"]
        survived = [entry["properties"].get("survived") for entry in ran if "survived" in entry["properties"]]
        row = {"fault": label, "tests": prefix, "skipped": len(matched) - len(ran),
               "survived": survived[0] if len(survived) == 1 and len(ran) == 1 else
               f"{sum(entry['outcome'] == 'passed' for entry in ran)}/{len(ran)}"}
        codes = sorted({code for entry in ran for code in json.loads(entry["properties"].get("exit_codes", "[]"))})
        if codes:
            row["exit_codes"] = codes
        rows.append(row)
    return rows


def machine() -> dict:
    from coldchain import hostinfo

    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
            "cpu": hostinfo.cpu_model(), "cpu_class": hostinfo.cpu_class(), "cpu_flags": hostinfo.numerics_flags(),
            "cores": hostinfo.cores(), "python": platform.python_version()}


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/faults.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="concurrent freeze pairs (CI runs 3)")
    parser.add_argument("--skip-infer", action="store_true", help="skip the three concurrent make infer")
    parser.add_argument("--infer-only", action="store_true",
                        help="only the three concurrent make infer, added to the results --out holds")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "faults.json")
    parser.add_argument("--table", action="store_true", help="print --out's results as the README's table, run nothing")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(args.out.read_text())))
        return 0
    os.environ.update(CI="true", COLDCHAIN_FAULT_ROUNDS=str(args.rounds))  # a missing daemon fails, not skips
    os.chdir(ROOT)
    if args.infer_only:
        result = json.loads(args.out.read_text())
        code = result.get("pytest_exit", 0)
    else:
        code, result = run_tests(args.rounds, args.out)
        write(args.out, result)
    if not args.skip_infer:
        result["faults"] = [row for row in result["faults"] if row["tests"] != INFER_SCRIPT]
        result["concurrent_make_infer"] = concurrent_infer()
        result["faults"].append({"fault": "three concurrent make infer from two fresh clones, one daemon",
                                 "tests": INFER_SCRIPT,
                                 # One trial: every run exits 0, identical predictions, nothing stray.
                                 "survived": "1/1" if result["concurrent_make_infer"].get("passed") else "0/1",
                                 "exit_codes": sorted(set(result["concurrent_make_infer"].get("exit_codes",
                                                                                               {}).values()))})
        write(args.out, result)
    print(json.dumps(result["faults"], indent=2))
    return 0 if code == 0 and result.get("concurrent_make_infer", {}).get("passed", True) else 1


INFER_SCRIPT = "scripts/concurrent-infer.py"


def run_tests(rounds: int, out: Path) -> tuple[int, dict]:
    import pytest

    header = {**machine(), "rounds": rounds}
    collector = Collector(lambda tests: write(out, {**header, "complete": False, "faults": figures(tests)}))
    files = []  # in FAULTS' order: the figures that matter most first
    for _, prefix in FAULTS:
        path = prefix.split("::")[0]
        for found in ([path] if path.endswith(".py") else sorted(str(hit.relative_to(ROOT))
                                                                 for hit in ROOT.glob(path + "*.py"))):
            if found not in files:
                files.append(found)
    code = int(pytest.main(["-q", "-p", "no:cacheprovider", *files], plugins=[collector]))
    return code, {**header, "complete": True, "pytest_exit": code, "faults": figures(collector.tests)}


def concurrent_infer() -> dict:
    ran = subprocess.run([sys.executable, str(ROOT / INFER_SCRIPT)], capture_output=True, text=True)
    sys.stderr.write(ran.stderr)
    return json.loads(ran.stdout) if ran.stdout.strip().startswith("{") else {"passed": False,
                                                                             "error": ran.stdout[-2000:]}


def table(result: dict) -> str:
    lines = [f"Measured {result['date']} on {result['cores']} cores of {result['cpu']} ({result['cpu_class']}), "
             f"{result['rounds']} rounds of concurrent freezes:", "", "| fault | survived | exit codes |", "|---|---|---|"]
    for row in result["faults"]:
        lines.append(f"| {row['fault']} | {row['survived']} | {', '.join(map(str, row.get('exit_codes', []))) or '-'} |")
    return "\n".join(lines)


def write(path: Path, result: dict) -> None:
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    sys.exit(main())
