"""bench/results.json: every measurement dated and kept with the machine that made it. A new run
replaces only the values it measured, so numbers from separate runs (CPU and CUDA images, a cold
build) stay, each with its own date and CPU flags under its entry's "measured"."""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path

from ..config import Project
from ..fsutil import atomic_write_text
from ..hostinfo import cores, cpu_class, cpu_model, numerics_flags

RESULTS = "results.json"
QUICK_RESULTS = "results-quick.json"


def measured_on() -> dict:
    """Stamped on every entry: when, and on which CPU (the flags that change the numbers)."""
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "cpu": cpu_model(), "cores": cores(),
            "cpu_flags": numerics_flags(), "cpu_class": cpu_class(), "python": platform.python_version()}


def stamp(entries: dict) -> dict:
    """Each value of each entry gets the date and CPU it was measured on, under the entry's "measured"."""
    meta = measured_on()
    return {name: {**value, "measured": {field: meta for field in value}} if isinstance(value, dict) else value
            for name, value in entries.items()}


def merge(existing: dict, results: dict) -> dict:
    """Section by section, entry by entry, value by value: what this run measured replaces the old
    value (and its date), everything else stays as it was measured."""
    merged = json.loads(json.dumps(existing))
    for section, values in results.items():
        if not (isinstance(values, dict) and isinstance(merged.get(section), dict)):
            merged[section] = values
            continue
        for name, entry in values.items():
            old = merged[section].get(name)
            if isinstance(entry, dict) and isinstance(old, dict):
                dates = {**old.get("measured", {}), **entry.get("measured", {})}
                merged[section][name] = {**old, **entry, "measured": dates}
            else:
                merged[section][name] = entry
    merged["meta"] = {**measured_on(), "note": "each entry's 'measured' says when and on which CPU it was measured"}
    return merged


def write_results(project: Project, results: dict, name: str = RESULTS) -> Path:
    target = project.root / "bench" / name
    try:
        existing = json.loads(target.read_text()) if target.exists() else {}
    except ValueError:
        existing = {}
    atomic_write_text(target, json.dumps(merge(existing, results), indent=2, sort_keys=True) + "\n")
    return target


def drift_timing(project: Project) -> dict:
    """The wall time of the last `make drift-test` (its report records it), cold or warm as it ran."""
    report = project.root / "out" / "drift" / "drift-report.json"
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError):
        return {}
    reused = all(env.get("reused") for env in data.get("environments", {}).values())
    return {"last_run": {**data.get("timing", {}), "images_all_cached": reused, "generated": data.get("generated"),
                         "cases": data.get("counts", {}).get("cases"), "host_cpu": data.get("host_cpu")}}
