"""The drift report assembled from its cases: the environments, variants, timing and host; the
summary (which a merged report derives again); which TensorFlow versions load the default graph;
and the heatmap, drawn from the written report."""

from __future__ import annotations

import time
from pathlib import Path

from ..config import BASES, IMAGES, Project
from ..confine import read_manifest
from ..contract import (FLAG_REPORT, GOLDEN_LOGITS_KEY, MOUNT_REPORT, OUTCOME_NOT_APPLICABLE,
                        describe_numerics)
from ..engine import Engine
from ..environments.emulation import emulated
from ..environments.images import BuildOptions, ensure_image
from ..environments.matrix import DEFAULT_VARIANT, Matrix
from ..fsutil import file_sha256
from ..hostinfo import cpu_class, cpu_description, numerics_flags
from ..steps.pipeline import StepConfig, run_step
from .judging import reference_numerics
from .options import DriftOptions
from .report import REPORT_HEATMAP


def assemble_report(project: Project, matrix: Matrix, options: DriftOptions, images: dict, models: dict,
                    cases: list[dict], env_names: set[str], timing: dict) -> dict:
    environments = {}
    for name in sorted(env_names):
        env, image = matrix.envs[name], images[name]
        environments[name] = {"description": env.description, "image": image.tag, "image_id": image.info.id,
                              "size_bytes": image.info.size, "reused": image.reused,
                              "lock": env.image_spec().locked.lock, "device": env.device,
                              "tensorflow": image.info.labels.get("io.coldchain.tensorflow.version"),
                              "python": image.info.labels.get("io.coldchain.python.version"),
                              **_platform(env),
                              "must_match_training_lock": env.must_match_training_lock}
    return {
        "matrix": str(matrix.path.relative_to(project.root)) if matrix.path.is_relative_to(project.root)
        else str(matrix.path),
        "matrix_sha256": file_sha256(matrix.path, unreadable_ok=True),
        "reference_env": matrix.reference_env,
        "model": str(options.model), "model_sha256": _manifest_sha(options.model),
        "reference_numerics": reference_numerics(options.model),
        "reference_numerics_summary": describe_numerics(reference_numerics(options.model)),
        **summarise(cases),
        "environments": environments,
        "variants": {name: str(path) if isinstance(path, Path) else f"not applicable: {path}"
                     for name, path in sorted(models.items())},
        "cases": cases,
        "timing": timing,
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host_cpu": cpu_description(),
        "host_cpu_flags": numerics_flags(),
        "host_cpu_class": cpu_class(),
    }


def _platform(env) -> dict:
    """Which machine the environment's image is for, and whether this host ran it under qemu: emulated
    times are this host's, never that machine's speed."""
    base = BASES[env.image_spec().base]
    return {"platform": base.platform, "emulated": emulated(base)}


def summarise(cases: list[dict]) -> dict:
    """What a report derives from its cases (a merged report derives it again)."""
    applicable = [case for case in cases if case["outcome"] != OUTCOME_NOT_APPLICABLE]
    return {
        "ok": all(case["ok"] for case in cases),
        "counts": {"cases": len(cases), "as_expected": sum(case["ok"] for case in applicable),
                   "unexpected": sum(not case["ok"] for case in cases),
                   "not_applicable": len(cases) - len(applicable)},
        "tensorflow_versions": tensorflow_summary(cases),
    }


def _manifest_sha(model: Path) -> str | None:
    try:
        return read_manifest(model)["model"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def tensorflow_summary(cases: list[dict]) -> list[dict]:
    """Which TF versions load the default frozen graph and how far their logits move."""
    rows = {}
    for case in cases:
        settings = case.get("settings") or {}
        if case["variant"] != DEFAULT_VARIANT or settings.get("environment") or settings.get("preprocessing"):
            continue
        golden = case.get("golden") or {}
        logits = next((t for t in golden.get("tensors", []) if t["key"] == GOLDEN_LOGITS_KEY), {})
        version = case.get("tensorflow") or "?"
        rows.setdefault(version, {
            "tensorflow": version, "python": case.get("python"), "env": case["env"],
            "loads": bool(case.get("loaded")), "outcome": case.get("runtime_outcome"),
            "logits_max_abs_diff": logits.get("max_abs_diff"), "logits_max_rel_diff": logits.get("max_rel_diff"),
            "bit_exact": golden.get("bit_exact"),
        })
    return sorted(rows.values(), key=lambda row: [int(p) if p.isdigit() else 0 for p in row["tensorflow"].split(".")])


def render_heatmap(engine: Engine, project: Project, report_json: Path, options: DriftOptions) -> Path:
    """The heatmap PNG, drawn in the inference image (Pillow lives there, the host needs none)."""
    image = ensure_image(engine, project, IMAGES["infer-cpu"], BuildOptions(prefix=options.prefix))
    target = report_json.with_name(REPORT_HEATMAP)
    step = StepConfig(name="heatmap", role="infer", module="heatmap", output=target.resolve(),
                      inputs={MOUNT_REPORT: report_json.parent.resolve()},
                      arguments=(FLAG_REPORT, f"{MOUNT_REPORT}/{report_json.name}"), memory="1g",
                      prefix=options.prefix, run_id=options.run_id, output_is_file=True)
    run_step(engine, project, step, image)
    return target
