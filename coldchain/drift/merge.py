"""Merging the partial reports of a sharded drift test into the report an unsharded run writes.
Every disagreement that would make the merged report lie is refused, naming the file: another
model or matrix, a missing or repeated shard or case, a truncated report."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from ..errors import UsageError
from .assembly import summarise

PARTIAL_GLOB = "drift-report.shard-*-of-*.json"
PARTIAL_NAME = re.compile(r"drift-report\.shard-(\d+)-of-(\d+)\.json$")
# Keys every shard of one run must agree on, and what a disagreement means.
MUST_AGREE = {
    "model_sha256": "another model",
    "matrix_sha256": "another matrix file",
    "matrix_cases": "another set of cases (another matrix, --case selection or adopted model)",
    "reference_env": "another reference environment",
}
RERUN = "run that shard again, or fetch its artifact again"


def partial_paths(arguments: list[Path]) -> list[Path]:
    """Files as given; a directory stands for the partial reports in it."""
    paths: list[Path] = []
    for argument in arguments:
        if argument.is_dir():
            found = sorted(argument.glob(PARTIAL_GLOB))
            if not found:
                raise UsageError(f"{argument}: no partial reports ({PARTIAL_GLOB}) in this directory",
                                 fix="pass the directories or files the shards wrote (drift-test --shard I/N)")
            paths += found
        elif argument.is_file():
            paths.append(argument)
        else:
            raise UsageError(f"{argument}: no such file or directory", fix="pass the partial reports the shards wrote")
    if not paths:
        raise UsageError("no partial reports given", fix="pass drift-report.shard-I-of-N.json files or their directories")
    return paths


def load_partial(path: Path) -> dict:
    try:
        report = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a JSON report", fix=RERUN) from None
    except ValueError as error:
        raise UsageError(f"{path}: not a whole JSON report ({error}; truncated?)", fix=RERUN) from None
    except OSError as error:
        raise UsageError(f"{path}: cannot be read ({error.strerror})", fix=RERUN) from None
    if not isinstance(report, dict) or not isinstance(report.get("cases"), list):
        raise UsageError(f"{path}: not a drift report", fix="pass the drift-report.shard-I-of-N.json a shard wrote")
    shard = report.get("shard")
    if not isinstance(shard, dict) or not isinstance(shard.get("index"), int) or not isinstance(shard.get("total"), int):
        raise UsageError(f"{path}: a whole run's report, not a shard's", fix="merge only the reports of "
                         "'drift-test --shard I/N'; an unsharded report needs no merge")
    names = [case.get("name") for case in report["cases"] if isinstance(case, dict)]
    if names != shard.get("cases") or not isinstance(report.get("counts"), dict) \
            or report["counts"].get("cases") != len(names):
        raise UsageError(f"{path}: shard {shard['index']}/{shard['total']} lists {len(shard.get('cases') or [])} "
                         f"cases but holds {len(names)} (truncated or edited)", fix=RERUN)
    match = PARTIAL_NAME.search(path.name)
    if match and (int(match.group(1)), int(match.group(2))) != (shard["index"], shard["total"]):
        raise UsageError(f"{path}: the name says shard {match.group(1)}/{match.group(2)}, the report "
                         f"{shard['index']}/{shard['total']}", fix="restore the name the shard wrote")
    return report


def merge(paths: list[Path]) -> dict:
    started = time.perf_counter()
    partials = [(path, load_partial(path)) for path in partial_paths(paths)]
    first_path, first = partials[0]
    total = first["shard"]["total"]
    by_index: dict[int, Path] = {}
    for path, report in partials:
        shard = report["shard"]
        if shard["total"] != total:
            raise UsageError(f"{path}: shard {shard['index']}/{shard['total']}, but {first_path} is one of {total}",
                             fix="merge the shards of one run (the same --shard I/N total)")
        if shard["index"] in by_index:
            raise UsageError(f"{path}: shard {shard['index']}/{total} again (also {by_index[shard['index']]})",
                             fix="pass each shard's report once")
        by_index[shard["index"]] = path
        for key, meaning in MUST_AGREE.items():
            if report.get(key) != first.get(key):
                raise UsageError(f"{path}: {key} differs from {first_path}'s: {meaning}",
                                 fix="merge the shards of one run, all made from one model and one matrix")
    missing = [index for index in range(1, total + 1) if index not in by_index]
    if missing:
        raise UsageError(f"shard{'s' if len(missing) > 1 else ''} {', '.join(f'{i}/{total}' for i in missing)} "
                         f"missing (have {', '.join(str(p) for p in by_index.values())})",
                         fix="pass every shard's drift-report.shard-I-of-N.json (a failed shard still writes one)")
    cases: dict[str, dict] = {}
    where: dict[str, Path] = {}
    for path, report in partials:
        for case in report["cases"]:
            if case["name"] in cases:
                raise UsageError(f"{path}: case {case['name']} also in {where[case['name']]}",
                                 fix="the shards were split differently: run them all with the same matrix, "
                                     "shard total and --costs")
            cases[case["name"]], where[case["name"]] = case, path
    order = first.get("matrix_cases") or []
    absent = [name for name in order if name not in cases]
    if absent:
        raise UsageError(f"case{'s' if len(absent) > 1 else ''} {', '.join(absent)} in no partial report",
                         fix="the shards were split differently: run them all with the same matrix, shard total "
                             "and --costs")
    stray = [name for name in cases if name not in order]
    if stray:
        raise UsageError(f"{where[stray[0]]}: case {stray[0]} is not in the matrix the others ran",
                         fix="merge the shards of one run")
    merged_cases = [cases[name] for name in order]
    partials.sort(key=lambda item: item[1]["shard"]["index"])
    environments: dict[str, dict] = {}
    variants: dict[str, str] = {}
    for _, report in partials:
        for name, env in (report.get("environments") or {}).items():
            environments.setdefault(name, env)
        for name, variant in (report.get("variants") or {}).items():
            variants.setdefault(name, variant)
    merged = {key: value for key, value in first.items() if key not in ("shard", "cases", "environments", "variants")}
    merged.update(summarise(merged_cases))
    merged.update(cases=merged_cases, environments=dict(sorted(environments.items())),
                  variants=dict(sorted(variants.items())),
                  generated=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  timing=merged_timing(partials, time.perf_counter() - started))
    return merged


def merged_timing(partials: list[tuple[Path, dict]], merge_s: float) -> dict:
    """Shards run side by side: each phase took as long as its slowest shard."""
    timings = [report.get("timing") or {} for _, report in partials]
    def longest(key: str) -> float:
        return max((timing.get(key) or 0.0 for timing in timings), default=0.0)
    return {"environments_s": longest("environments_s"), "variants_s": longest("variants_s"),
            "cases_s": longest("cases_s"), "total_s": longest("total_s"),
            "jobs": sum(timing.get("jobs") or 1 for timing in timings), "merge_s": round(merge_s, 3),
            "shards": [{"shard": f"{report['shard']['index']}/{report['shard']['total']}", "file": str(path),
                        "host_cpu_class": report.get("host_cpu_class"), **(report.get("timing") or {})}
                       for path, report in partials]}
