"""bench/README.md, the benchmarks page, written from bench/results.json and bench/ci-*.json only:
every number on it is a value in those files, shown with the date and CPU flags it was measured
with. `coldchain bench` rewrites it after measuring; `coldchain bench --page-only` without measuring."""

from __future__ import annotations

import json
from pathlib import Path

from ..config import Project
from ..contract import STARTUP_PHASES
from ..drift.report import PHASES, fmt
from ..fsutil import atomic_write_text

PAGE = "README.md"
CI_GLOB = "ci-*.json"


def _when(entry: dict, *fields: str) -> str:
    """The dates and CPUs the entry's fields (all, by default) were measured on."""
    measured = entry.get("measured") or {}
    metas = [measured[field] for field in (fields or measured) if field in measured]
    seen = []
    for meta in metas:
        text = (f"{meta.get('date')}, {meta.get('cpu')} ({meta.get('cores')} cores), "
                f"flags {', '.join(meta.get('cpu_flags') or []) or 'none recorded'}")
        if text not in seen:
            seen.append(text)
    return "; ".join(seen) or "date not recorded"


def precision(variant: dict) -> str:
    """What the runtime reported it computed in, and what was declared where that differs."""
    runtime = variant.get("runtime") or {}
    effective, declared = runtime.get("precision_effective"), runtime.get("precision_declared")
    if not effective:
        return "fp32" if not runtime else "-"
    return effective if declared in (None, effective) else f"{effective} (declared {declared})"


def inference(section: dict) -> list[str]:
    lines = []
    for mode, entry in sorted(section.items()):
        if not isinstance(entry, dict) or "variants" not in entry:
            continue
        sizes = sorted({int(size) for variant in entry["variants"].values() for size in variant.get("batches", {})})
        lines += [f"### Inference speed ({mode}): ResNet v1 50 at {entry.get('input_size')} px, "
                  f"{entry.get('cores')} cores", "", f"Measured {_when(entry, 'variants')}.", "",
                  "| runtime / setting | precision | golden | " + " | ".join(f"batch {s} images/s (p50 ms)" for s in sizes)
                  + " | fraction of peak, largest batch |", "|---|---|---|" + "---|" * (len(sizes) + 1)]
        for name, variant in entry["variants"].items():
            rows = variant.get("batches", {})
            cells = [f"{fmt(rows[str(s)]['images_per_second'])} ({fmt(rows[str(s)]['p50_ms'])})" if str(s) in rows
                     else "-" for s in sizes]
            last = rows.get(str(sizes[-1]), {}) if sizes else {}
            lines.append(f"| {name} | {precision(variant)} | {'ok' if variant.get('golden_ok') else 'FAILED'} | "
                         + " | ".join(cells)
                         + f" | {fmt(last.get('fraction_of_peak'))} |")
        peak = entry.get("peak_fp32") or {}
        lines += ["", f"Peak FP32: {fmt(peak.get('gflops'))} GFLOP/s ({peak.get('derivation', 'not derivable')}); "
                      f"{fmt(entry.get('gflops_per_image'))} GFLOP per image. TensorFlow over ONNX Runtime at "
                      f"batch 8: {fmt(entry.get('tf_over_onnxruntime_at_batch_8'))}."]
        best32, best16 = entry.get("fastest_fp32_at_batch_8"), entry.get("fastest_bf16_at_batch_8")
        if best32:
            lines += ["", f"Fastest fp32 at batch 8 (what `infer --runtime fastest` picks): {best32['variant']}, "
                          f"{fmt(best32['images_per_second'])} images/s."
                      + (f" bf16 declared: {best16['variant']}, {fmt(best16['images_per_second'])} images/s, "
                         f"{fmt(best16['over_tensorflow_fp32'])}x TensorFlow fp32." if best16 else
                         " No runtime computed in bf16 on this CPU.")]
        lines += first_prediction(entry.get("first_prediction") or {})
        threads = entry.get("threads") or {}
        if threads:
            lines += ["", "| threads | batch | images/s | p50 ms |", "|---|---|---|---|"]
            for name, row in threads.items():
                lines.append(f"| {name} | {row.get('batch')} | {fmt(row.get('images_per_second'))} | "
                             f"{fmt(row.get('p50_ms'))} |")
            lines += ["", f"Fastest thread setting: `{entry.get('recommended_threads')}`."]
        lines.append("")
    return lines


def tflite(section: dict) -> list[str]:
    """TFLite and int8 rows beside TensorFlow fp32 from the same run: speed, what the runtime computed in, XNNPACK,
    and top-1 agreement with TensorFlow fp32 on the golden and the held-out images."""
    lines = []
    for mode, entry in sorted(section.items()):
        if not isinstance(entry, dict) or "rows" not in entry:
            continue
        sizes = sorted({int(size) for row in entry["rows"].values() for size in row.get("batches", {})})
        lines += [f"### TensorFlow Lite and int8 ({mode}): ResNet v1 50 at {entry.get('input_size')} px", "",
                  f"Measured {_when(entry, 'rows')}.", "",
                  "| row | precision | XNNPACK | golden | top-1 vs TF fp32, golden | top-1 vs TF fp32, held-out | "
                  + " | ".join(f"batch {s} images/s" for s in sizes) + " |", "|---|---|---|---|---|---|" + "---|" * len(sizes)]
        for name, row in entry["rows"].items():
            runtime, agreement = row.get("runtime") or {}, row.get("top1_agreement_vs_tensorflow_fp32") or {}
            xnnpack = (runtime.get("xnnpack") or {}).get("enabled")
            held = agreement.get("held_out") or {}
            batches = row.get("batches", {})
            lines.append(f"| {name} | {precision(row)} | {'-' if xnnpack is None else 'on' if xnnpack else 'off'} | "
                         f"{'ok' if row.get('golden_ok') else 'FAILED'} | {fmt(agreement.get('golden_images'))} | "
                         + (f"{held.get('agree')}/{held.get('images')}" if held else "-") + " | "
                         + " | ".join(fmt(batches[str(s)]["images_per_second"]) if str(s) in batches else "-"
                                      for s in sizes) + " |")
        best = entry.get("fastest_int8_at_batch_8")
        lines += ["", f"Fastest int8 at batch 8 (what `infer --runtime fastest --precision int8` considers): "
                      f"{best['variant']}, {fmt(best['images_per_second'])} images/s, "
                      f"{fmt(best['over_tensorflow_fp32'])}x TensorFlow fp32." if best else
                  "No int8 row passed its golden check and kept TensorFlow fp32's top-1 on "
                  f"{entry.get('min_top1_agreement_for_speed', 1.0)} of the held-out images.", ""]
        if entry.get("int8_too_far_from_fp32"):
            lines[-1:-1] = [f"Not counted for speed (top-1 agreement with fp32 under "
                            f"{entry.get('min_top1_agreement_for_speed')}): {', '.join(entry['int8_too_far_from_fp32'])}."]
    return lines


def first_prediction(first: dict) -> list[str]:
    """Start to first prediction per model: the run that ran the golden probe, and the median run that
    used the golden check kept from it, phase by phase."""
    models = first.get("models") or {}
    if not models:
        return []
    lines = ["", f"Start to first prediction ({first.get('what')}), seconds:", "",
             "| phase | " + " | ".join(f"{name}: probe run | {name}: kept check (median of "
                                         f"{entry.get('kept_check_runs')})" for name, entry in models.items()) + " |",
             "|---|" + "---|---|" * len(models)]
    for key, meaning in [*STARTUP_PHASES, ("total_s", "total")]:
        cells = []
        for entry in models.values():
            for run in (entry.get("probe_run") or {}, entry.get("kept_check_median") or {}):
                cells.append(fmt(run.get(key)) if key in run else "-")
        lines.append(f"| {meaning} | " + " | ".join(cells) + " |")
    return lines


def images(section: dict) -> list[str]:
    lines = ["| image | size GB | cold build s | rebuild, inputs changed, s | up-to-date check s | "
             "measured |", "|---|---|---|---|---|---|"]
    for name, entry in sorted(section.items()):
        if isinstance(entry, dict):
            lines.append(f"| {name} | {fmt(entry.get('size_gb'))} | {fmt(entry.get('cold_build_s'))} | "
                         f"{fmt(entry.get('warm_rebuild_s'))} | {fmt(entry.get('up_to_date_check_s'))} | "
                         f"{_when(entry)} |")
    return lines + [""]


def drift(section: dict) -> list[str]:
    lines = []
    for mode, entry in sorted(section.items()):
        if not isinstance(entry, dict) or "shared" not in entry:
            continue
        lines += [f"### Drift test, warm ({mode}, {entry.get('cases')} cases)", "", f"Measured {_when(entry)}.", "",
                  "Seconds per case, by phase: one container per case (`--isolate`, as before cases shared "
                  "containers) and shared containers (the default).", "",
                  "| | containers | " + " | ".join(label for _, label in PHASES) + " | per case | cases phase s | "
                  "whole run s |", "|---|---|" + "---|" * (len(PHASES) + 3)]
        for name in ("isolated", "shared"):
            run = entry.get(name) or {}
            per_case = run.get("per_case") or {}
            lines.append(f"| {name} | {per_case.get('containers', '-')} | "
                         + " | ".join(fmt(per_case.get(key)) for key, _ in PHASES)
                         + f" | {fmt(per_case.get('total_s'))} | {fmt(run.get('cases_s'))} | "
                           f"{fmt(run.get('wall_s'))} |")
        lines += ["", "| shards, started together | whole run s | cases phase per shard s | cases per shard | "
                      "merge s (CLI, whole) | verdict |", "|---|---|---|---|---|---|"]
        lines.append(f"| 1 (unsharded) | {fmt((entry.get('shared') or {}).get('wall_s'))} | "
                     f"{fmt((entry.get('shared') or {}).get('cases_s'))} | {entry.get('cases')} | - | "
                     f"{'ok' if (entry.get('shared') or {}).get('ok') else 'UNEXPECTED'} |")
        for key in sorted(k for k in entry if k.startswith("shards_")):
            run = entry[key]
            lines.append(f"| {key.split('_')[1]} | {fmt(run.get('side_by_side_wall_s'))} | "
                         f"{', '.join(fmt(v) for v in run.get('shard_cases_s', []))} | "
                         f"{', '.join(str(v) for v in run.get('shard_cases', []))} | "
                         f"{fmt(run.get('merge_s'))} ({fmt(run.get('merge_wall_s'))}) | "
                         f"{'ok' if run.get('ok') else 'UNEXPECTED'} |")
        lines += ["", entry.get("note", ""), ""]
    return lines


def reproducibility(section: dict) -> list[str]:
    lines = []
    for mode, entry in sorted(section.items()):
        if not isinstance(entry, dict) or "runs" not in entry:
            continue
        lines += [f"### Training reproducibility across CPU classes ({mode})", "",
                  f"Measured {_when(entry)} (host class {entry.get('host_cpu_class')}); the other class is "
                  "simulated with oneDNN's settings.", "", "| mode | simulated class | model.pb sha256 | numerics |",
                  "|---|---|---|---|"]
        for numerics_mode, runs in entry["runs"].items():
            for simulated, run in runs.items():
                lines.append(f"| {numerics_mode} | {simulated} | `{run.get('model_sha256', '')[:16]}` | "
                             f"{run.get('numerics')} |")
        same = entry.get("identical_across_classes") or {}
        lines += ["", "Identical across classes: " + ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in same.items())
                  + ".", ""]
    return lines


def adopt(section: dict) -> list[str]:
    lines = []
    for mode, entry in sorted(section.items()):
        if not isinstance(entry, dict):
            continue
        lines += [f"### Adopting a frozen graph ({mode})", "", f"Measured {_when(entry)}.", "", "| what | seconds |",
                  "|---|---|"]
        for key, value in entry.items():
            if key.endswith("_s"):
                lines.append(f"| {key.removesuffix('_s').replace('_', ' ')} | {fmt(value)} |")
        if entry.get("note"):
            lines += ["", entry["note"]]
        lines.append("")
    return lines


def signing(section: dict) -> list[str]:
    lines = []
    for mode, entry in sorted(section.items()):
        item = entry.get("model_directory") if isinstance(entry, dict) else None
        if not isinstance(item, dict):
            continue
        lines += [f"### Signing and verifying a model directory ({mode})", "",
                  f"{item.get('model', 'make freeze model directory')}: {fmt((item.get('bytes') or 0) / 1e6)} MB in "
                  f"{item.get('files')} files, best of {item.get('repeats')}. Measured {_when(entry)}.", "",
                  "| what | seconds |", "|---|---|", f"| sign (`--sign-key`) | {fmt(item.get('sign_s'))} |",
                  f"| verify (`--trust`, on the host) | {fmt(item.get('verify_s'))} |", ""]
    return lines


def transfer(section: dict) -> list[str]:
    lines = []
    for mode, entry in sorted(section.items()):
        if not isinstance(entry, dict):
            continue
        lines += [f"### A shard's images on another Docker daemon ({mode})", "",
                  f"Shard {entry.get('shard')} of the default matrix: {', '.join(entry.get('images') or [])} "
                  f"({fmt(entry.get('image_gb'))} GB of images). Measured {_when(entry)}.", "",
                  "| how | seconds | size GB |", "|---|---|---|",
                  f"| build them in the job ({entry.get('build_note', 'not measured')}) | {fmt(entry.get('build_s'))} | |",
                  f"| `images-save` (docker save) | {fmt(entry.get('save_s'))} | {fmt(entry.get('archive_gb'))} |",
                  f"| `images-load` (docker load into a daemon without them, then checked) | {fmt(entry.get('load_s'))} | |",
                  f"| `images-push` to a registry | {fmt(entry.get('push_s'))} | |",
                  f"| `images-pull` by digest into a daemon without them, then checked | {fmt(entry.get('pull_s'))} | |",
                  "", f"Registry: {entry.get('registry', 'not measured')}.", ""]
    return lines


def ci(runs: list[tuple[str, dict]]) -> list[str]:
    if not runs:
        return []
    lines = ["### CI (`bash .ci/run` in a fresh clone)", "",
             "| file | date | CPU flags | Docker images before | " + "freeze s | infer s | drift-test s | test s | "
             "total min | disk used GB | commit |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, run in runs:
        stages = run.get("stages_s") or {}
        before, least = run.get("disk_free_gb_before"), run.get("disk_free_gb_min")
        used = fmt(before - least) if before is not None and least is not None else "not recorded"
        lines.append(f"| `{name}` | {run.get('date')} | {run.get('cpu_flags')} | {run.get('docker_images_before')} | "
                     + " | ".join(fmt(stages.get(stage)) for stage in ("freeze", "infer", "drift-test", "test"))
                     + f" | {fmt((run.get('total_s') or 0) / 60)} | {used} | {run.get('commit')} |")
    return lines + ["", "Docker images before = 0: a cold run (no base, no layer cache, no wheelhouse). Disk used: the "
                    "most disk the run took at once, beyond what was used when it started (free space before minus "
                    "the least free space seen, sampled every 15 s where Docker keeps images).", ""]


def render(results: dict, ci_runs: list[tuple[str, dict]]) -> str:
    lines = ["# coldchain benchmarks", "",
             "Written by `coldchain bench` (`make bench`) from `bench/results.json` and the CI timings in "
             "`bench/ci-*.json`; do not edit by hand (a test compares it with the files). Every value is shown "
             "with the date and the CPU flags it was measured with; values from separate runs keep their own.", ""]
    for title, key, section in (("Inference", "inference", inference), ("TensorFlow Lite and int8", "tflite", tflite),
                                ("Images", "images", images),
                                ("Drift test", "drift", drift), ("Reproducibility", "reproducibility", reproducibility),
                                ("Adopt", "adopt", adopt), ("Images across CI jobs", "transfer", transfer),
                                ("Signing", "signing", signing)):
        if isinstance(results.get(key), dict):
            body = section(results[key])
            if body:
                lines += [f"## {title}", "", *body]
    last = (results.get("drift_test") or {}).get("last_run")
    if last:
        lines += ["## Last `make drift-test`", "",
                  f"{last.get('cases')} cases, {last.get('generated')}, images all cached: "
                  f"{last.get('images_all_cached')}: environments {fmt(last.get('environments_s'))} s, variants "
                  f"{fmt(last.get('variants_s'))} s, cases {fmt(last.get('cases_s'))} s, total "
                  f"{fmt(last.get('total_s'))} s ({last.get('host_cpu')}).", ""]
    ci_lines = ci(ci_runs)
    if ci_lines:
        lines += ["## CI", "", *ci_lines]
    return "\n".join(lines).rstrip() + "\n"


def ci_runs(directory: Path) -> list[tuple[str, dict]]:
    runs = []
    for path in sorted(directory.glob(CI_GLOB)):
        try:
            runs.append((path.name, json.loads(path.read_text())))
        except (OSError, ValueError):
            continue
    return runs


def write_page(project: Project, results_name: str) -> Path:
    directory = project.root / "bench"
    results = json.loads((directory / results_name).read_text())
    target = directory / PAGE
    atomic_write_text(target, render(results, ci_runs(directory)))
    return target
