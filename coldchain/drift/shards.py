"""Splitting the drift matrix over a CI's job matrix: which cases shard I of N runs, and which
environments and images it needs. Deterministic from the matrix alone (every job of a CI run must
compute the same split without talking to the others), balanced by estimated cost, and stable:
a shard's cases do not depend on their position in the file, so adding a case moves little else."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ..config import IMAGES
from ..errors import UsageError
from ..environments.matrix import DEFAULT_VARIANT, CaseSpec, Matrix, freeze_images

# The variables CI systems set for a job of a job matrix; read in this order.
SHARD_VARIABLE = "COLDCHAIN_SHARD"  # "I/N", 1-based (what --shard takes)
SHARDS_VARIABLE = "COLDCHAIN_SHARDS"  # N, for a 0-based index that comes without a total
GITLAB_INDEX, GITLAB_TOTAL = "CI_NODE_INDEX", "CI_NODE_TOTAL"  # GitLab `parallel`: 1-based
KUBERNETES_INDEX = "JOB_COMPLETION_INDEX"  # Kubernetes Indexed Job: 0-based, no total

# Estimated seconds when no measured report is given: one container (start, interpreter, TensorFlow
# import) and one case in it (static checks, graph import, golden probe, latency); a CUDA image or an
# old TensorFlow starts slower. Measured on the 2-core machines (README, drift-test breakdown).
CONTAINER_S = 6.0
CASE_S = 2.5
SLOW_START_S = {"cuda": 6.0}
# The bounded-load slack: a shard may carry this much more than an even share before the next
# group goes to a less preferred shard (more slack: more stable, less balanced).
SLACK = 1.25


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    total: int

    def __str__(self) -> str:
        return f"{self.index}/{self.total}"

    @property
    def suffix(self) -> str:
        """What a partial report's file names carry."""
        return f"shard-{self.index}-of-{self.total}"


SHARD_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str, where: str = "--shard") -> Shard:
    match = SHARD_PATTERN.match(text or "")
    if not match:
        raise UsageError(f"{where}: '{text}' is not a shard", fix="give I/N, e.g. 2/3 for the second of three shards")
    index, total = int(match.group(1)), int(match.group(2))
    if total < 1 or not 1 <= index <= total:
        raise UsageError(f"{where}: shard {index}/{total} is out of range",
                         fix=f"the index counts from 1 to the number of shards ({max(total, 1)})")
    return Shard(index, total)


def shard_from_environment(environ: Mapping[str, str]) -> Shard | None:
    """The shard a CI job is, from the variables its job matrix sets; None when none is set."""
    if environ.get(SHARD_VARIABLE):
        return parse_shard(environ[SHARD_VARIABLE], SHARD_VARIABLE)
    if environ.get(GITLAB_TOTAL) or environ.get(GITLAB_INDEX):
        index, total = environ.get(GITLAB_INDEX, ""), environ.get(GITLAB_TOTAL, "")
        if not (index.isdigit() and total.isdigit()):
            raise UsageError(f"{GITLAB_INDEX}={index!r} {GITLAB_TOTAL}={total!r}: not a GitLab parallel job",
                             fix="set both (GitLab does with `parallel: N`) or pass --shard I/N")
        return parse_shard(f"{index}/{total}", f"{GITLAB_INDEX}/{GITLAB_TOTAL}")
    if environ.get(KUBERNETES_INDEX):
        index, total = environ[KUBERNETES_INDEX], environ.get(SHARDS_VARIABLE, "")
        if not index.isdigit():
            raise UsageError(f"{KUBERNETES_INDEX}={index!r} is not an index", fix="pass --shard I/N")
        if not total.isdigit():
            raise UsageError(f"{KUBERNETES_INDEX} is set but {SHARDS_VARIABLE} is not",
                             fix=f"set {SHARDS_VARIABLE} to the Job's completions (an Indexed Job gives no total)")
        return parse_shard(f"{int(index) + 1}/{total}", f"{KUBERNETES_INDEX}+1/{SHARDS_VARIABLE}")
    return None


def groups(matrix: Matrix) -> dict[str, list[CaseSpec]]:
    """Container groups (cases that share a probe container share a shard: splitting them would pay
    the container again), named from what groups them, never from file positions."""
    out: dict[str, list[CaseSpec]] = {}
    for case in matrix.cases:
        env, variables, cpu, alone = case.container_key
        name = (env + "".join(f" {k}={v}" for k, v in variables) + (f" cpu={cpu}" if cpu else "")
                + (f" [{alone}]" if alone else ""))
        out.setdefault(name, []).append(case)
    return out


def measured_costs(report_path: Path | None) -> dict[str, float]:
    """Seconds per case from an earlier drift report (its share of the container it ran in)."""
    if report_path is None:
        return {}
    try:
        report = json.loads(report_path.read_text())
        cases = report["cases"]
    except FileNotFoundError:
        raise UsageError(f"{report_path}: no such report", fix="pass a drift-report.json from an earlier run") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(f"{report_path}: not a drift report", fix="pass a drift-report.json from an earlier run") from None
    costs = {}
    for case in cases:
        timing = case.get("timing") or {}
        seconds = timing.get("container_s")
        shared = timing.get("cases_in_container") or 1
        if isinstance(seconds, (int, float)) and isinstance(case.get("name"), str):
            costs[case["name"]] = float(seconds) / shared
    return costs


def group_cost(matrix: Matrix, cases: list[CaseSpec], measured: Mapping[str, float]) -> float:
    if cases and all(case.name in measured for case in cases):
        return sum(measured[case.name] for case in cases)
    device = matrix.envs[cases[0].env].device if cases else "cpu"
    return CONTAINER_S + SLOW_START_S.get(device, 0.0) + CASE_S * len(cases)


def _preference(name: str, total: int) -> list[int]:
    """Rendezvous hashing: each group ranks the shards by a hash of (group, shard), so adding or
    removing a group leaves every other group's ranking as it was."""
    def score(index: int) -> str:
        return hashlib.sha256(f"{name}\0{index}".encode()).hexdigest()
    return sorted(range(1, total + 1), key=score)


def assign(matrix: Matrix, total: int, measured: Mapping[str, float] | None = None) -> dict[int, list[CaseSpec]]:
    """Shard index -> its cases (in matrix order). Groups go, heaviest first, to the first shard in
    their own ranking that stays under SLACK times an even share (else to the lightest)."""
    if total < 1:
        raise UsageError(f"{total} shards", fix="give at least one shard")
    measured = measured or {}
    named = groups(matrix)
    costs = {name: group_cost(matrix, cases, measured) for name, cases in named.items()}
    capacity = max(SLACK * sum(costs.values()) / total, max(costs.values(), default=0.0))
    load = {index: 0.0 for index in range(1, total + 1)}
    where: dict[str, int] = {}
    for name in sorted(named, key=lambda n: (-costs[n], n)):
        fits = [index for index in _preference(name, total) if load[index] + costs[name] <= capacity + 1e-9]
        chosen = fits[0] if fits else min(load, key=lambda index: (load[index], index))
        where[name] = chosen
        load[chosen] += costs[name]
    shard_of = {case.name: where[name] for name, cases in named.items() for case in cases}
    return {index: [case for case in matrix.cases if shard_of[case.name] == index] for index in range(1, total + 1)}


def environments_needed(matrix: Matrix, cases: list[CaseSpec]) -> list[str]:
    """Matrix environments the cases run in, plus those their re-exported variants are made in."""
    names = {case.env for case in cases}
    for case in cases:
        variant = matrix.variants[case.variant]
        if variant.reexport_env:
            names.add(variant.reexport_env)
    return sorted(names)


def images_needed(matrix: Matrix, cases: list[CaseSpec]) -> list[str]:
    """Kit images (config.IMAGES) and lock-built environment images the shard builds or loads."""
    images = set()
    for name in environments_needed(matrix, cases):
        env = matrix.envs[name]
        images.add(env.image if env.image else f"env:{name}")
    variants = {case.variant for case in cases}
    variants |= {matrix.variants[v].source for v in variants if matrix.variants[v].reexport_env}
    for variant in (matrix.variants[v] for v in variants if v != DEFAULT_VARIANT):
        if variant.kind == "freeze":
            images.update(freeze_images(variant.freeze_in))
    return sorted(images)


def plan(matrix: Matrix, total: int, measured: Mapping[str, float] | None = None) -> dict:
    """The shards as a CI job matrix reads them (GitHub: fromJSON(...) with `include`)."""
    measured = measured or {}
    split = assign(matrix, total, measured)
    named = groups(matrix)
    costs = {case.name: group_cost(matrix, cases, measured) / len(cases) for cases in named.values() for case in cases}
    include = []
    for index, cases in split.items():
        include.append({
            "shard": str(Shard(index, total)), "index": index, "total": total,
            "cases": [case.name for case in cases],
            "environments": environments_needed(matrix, cases), "images": images_needed(matrix, cases),
            "estimated_s": round(sum(costs[case.name] for case in cases), 1),
        })
    return {"total": total, "cases": len(matrix.cases), "include": include,
            "kit_images": sorted(IMAGES), "balance": _balance(include)}


def _balance(include: list[dict]) -> float:
    """Heaviest shard over an even share (1.0: perfectly even)."""
    loads = [item["estimated_s"] for item in include]
    mean = sum(loads) / len(loads) if loads else 0.0
    return round(max(loads) / mean, 2) if mean else 1.0
