"""`make bench`: the kit's own costs, measured and written to bench/results.json.
Timings are medians where repeated; nothing here asserts a speed."""

from __future__ import annotations

import json
import logging
import platform
import statistics
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .config import IMAGES, Project
from .engine import Engine
from .fsutil import atomic_write_text
from .images import BuildOptions, build_image, build_images

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchOptions:
    devices: tuple[str, ...] = ("cpu",)
    cold: bool = True  # also time builds that ignore Docker's layer cache
    repeats: int = 3
    prefix: str = "coldchain"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _timed(action) -> tuple[float, object]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def bench_images(engine: Engine, project: Project, options: BenchOptions) -> dict:
    results: dict = {"images": {}}
    for device in options.devices:
        specs = [spec for spec in IMAGES.values() if spec.device == device]
        build_images(engine, project, specs, BuildOptions(prefix=options.prefix))  # make sure they exist
        for spec in specs:
            entry: dict = {}
            if options.cold:
                seconds, built = _timed(lambda: build_image(engine, project, spec,
                                                            BuildOptions(prefix=options.prefix, nocache=True)))
                entry["cold_build_s"] = round(seconds, 1)
            warm = [_timed(lambda: build_image(engine, project, spec, BuildOptions(prefix=options.prefix, force=True)))[0]
                    for _ in range(options.repeats)]
            up_to_date = [_timed(lambda: build_image(engine, project, spec, BuildOptions(prefix=options.prefix)))[0]
                          for _ in range(options.repeats)]
            info = engine.inspect_image(spec.tag(options.prefix))
            entry.update(warm_rebuild_s=round(statistics.median(warm), 2),
                         up_to_date_check_s=round(statistics.median(up_to_date), 2),
                         size_bytes=info.size if info else None,
                         size_gb=round(info.size / 1e9, 2) if info else None)
            results["images"][spec.name] = entry
            log.info("%s: %s", spec.name, entry)
    return results


def write_results(project: Project, results: dict, name: str = "results.json") -> Path:
    """Merge into the existing results, so CPU and CUDA can be measured in separate runs."""
    target = project.root / "bench" / name
    merged = json.loads(target.read_text()) if target.exists() else {}
    for section, values in results.items():
        merged.setdefault(section, {}).update(values)
    results = merged
    results["meta"] = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "cpu": _cpu_model(),
                       "cores": __import__("os").cpu_count(), "python": platform.python_version()}
    atomic_write_text(target, json.dumps(results, indent=2, sort_keys=True) + "\n")
    return target
