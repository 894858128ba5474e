"""Inference speed, measured in containers: TensorFlow (defaults, oneDNN forced on and off, a folded
graph) and ONNX Runtime on the same frozen graph, in one run; every variant golden-checked before
it is timed; the thread sweep; start to first prediction. Nothing here asserts a speed."""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..cache import image_identity, produce, tree_fingerprint
from ..config import BENCH_IMAGE, IMAGES, Project
from ..contract import (ENV_ONEDNN, FLAG_BATCH, FLAG_FOLD_BATCH_NORM, FLAG_INPUT, FLAG_INPUT_SIZE,
                        FLAG_INTER_OP_THREADS, FLAG_INTRA_OP_THREADS, FLAG_MODEL, FLAG_OUTPUT, FLAG_PEAK,
                        FLAG_PRECISION, FLAG_PROFILE, FLAG_REPEATS, FLAG_RUNTIME, FLAG_STRIP_UNUSED, MOUNT_MODEL,
                        PRECISION_BF16, PRECISION_FP32, RUNTIME_ONNXRUNTIME, RUNTIME_OPENVINO, RUNTIME_TENSORFLOW,
                        RUN_CONFIG_FILE, STARTUP_KEY)
from ..engine import Engine
from ..steps.convert import memory_for
from ..steps.golden_cache import CACHE_DIR
from ..environments.images import BuildOptions, build_images, ensure_image
from ..errors import ColdchainError, UsageError
from ..hostinfo import cores, derived_peak_fp32
from ..steps.pipeline import freeze_step, run_step
from ..steps.runner import Image, ModuleRun, last_json, run_module

log = logging.getLogger(__name__)
# A 1-pixel PNG: enough to time start-to-first-prediction (it is resized like any image).
ONE_PIXEL_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"


@dataclass(frozen=True)
class InferenceBenchOptions:
    run: Path  # training run to freeze the benchmark models from
    out: Path  # bench models and raw results
    input_size: int = 224
    batches: tuple[int, ...] = (1, 8, 32)
    repeats: int = 10
    quick: bool = False  # CI: small input, batch 1-2, two repeats; checks the machinery, not the speed
    prefix: str = "coldchain"
    run_id: str = "coldchain-bench"


def bench_models(engine: Engine, project: Project, options: InferenceBenchOptions, train, size: int,
                 names: tuple[str, ...] = ("plain", "folded")) -> dict[str, Path]:
    """The plain and the folded+stripped graph at the benchmark size (those `names`), frozen once per run
    and image."""
    run_fingerprint = tree_fingerprint(options.run)
    models = {}
    for name, extra in (("plain", ()), ("folded", (FLAG_FOLD_BATCH_NORM, FLAG_STRIP_UNUSED))):
        if name not in names:
            continue
        step = freeze_step(options.run.resolve(), (options.out / f"model-{size}-{name}").resolve(),
                           (FLAG_INPUT_SIZE, str(size), *extra), prefix=options.prefix, run_id=options.run_id)
        key = {"image": image_identity(train.info.labels, train.info.id), "args": list(step.arguments),
               "run": run_fingerprint}
        produce(step.output, key, lambda step=step: run_step(engine, project, step, train))
        models[name] = step.output
    return models


def bench_inference(engine: Engine, project: Project, options: InferenceBenchOptions) -> dict:
    if not (options.run / RUN_CONFIG_FILE).is_file():
        raise UsageError(f"{options.run}: no training run to freeze the benchmark model from",
                         fix="run 'make train' first (make bench does)")
    train, infer = build_images(engine, project, [IMAGES["train-cpu"], IMAGES["infer-cpu"]],
                                BuildOptions(prefix=options.prefix))
    bench_image = ensure_image(engine, project, BENCH_IMAGE, BuildOptions(prefix=options.prefix))
    size = 64 if options.quick else options.input_size
    models = bench_models(engine, project, options, train, size)
    batches = (1, 2) if options.quick else options.batches
    repeats = 2 if options.quick else options.repeats

    def measure(label: str, image, model: str, runtime: str = RUNTIME_TENSORFLOW, environment: dict | None = None,
                threads: tuple[int, int] = (0, 0), sizes=batches, profile: bool = False,
                precision: str = PRECISION_FP32, peak: bool = False) -> dict:
        arguments = [FLAG_MODEL, MOUNT_MODEL, FLAG_RUNTIME, runtime, FLAG_PRECISION, precision,
                     FLAG_REPEATS, str(repeats), FLAG_INTRA_OP_THREADS, str(threads[0]),
                     FLAG_INTER_OP_THREADS, str(threads[1])] + \
            [arg for b in sizes for arg in (FLAG_BATCH, str(b))] + ([FLAG_PROFILE] if profile else []) + \
            ([FLAG_PEAK] if peak else [])
        log.info("bench: %s (%s, batches %s)", label, image.tag, list(sizes))
        run = ModuleRun(image=Image.of(image), module="bench", arguments=tuple(arguments), what=f"bench {label}",
                        inputs={MOUNT_MODEL: models[model]}, environment=environment or {}, run_id=options.run_id,
                        timeout_s=3600.0, memory=memory_for(runtime, ModuleRun.memory))
        try:
            return last_json(run_module(engine, run), run)
        except ColdchainError as error:
            # One broken runtime must not hide the others' numbers; the report names what failed.
            log.warning("bench: %s failed: %s", label, error.message)
            return {"error": error.message, "log_tail": error.log_tail, "golden": {"ok": False}, "batches": []}

    variants = {
        "tensorflow": measure("tensorflow", infer, "plain", profile=True, peak=True),
        "tensorflow_onednn_on": measure("tensorflow, oneDNN on", infer, "plain", environment={ENV_ONEDNN: "1"}),
        "tensorflow_onednn_off": measure("tensorflow, oneDNN off", infer, "plain", environment={ENV_ONEDNN: "0"}),
        "tensorflow_folded": measure("tensorflow, folded + stripped graph", infer, "folded"),
        "onnxruntime": measure("onnxruntime", bench_image, "plain", runtime=RUNTIME_ONNXRUNTIME),
        "openvino": measure("openvino fp32", bench_image, "plain", runtime=RUNTIME_OPENVINO),
        # Declared bf16: where the CPU has no bf16, OpenVINO computes fp32 and says so (recorded).
        "openvino_bf16": measure("openvino bf16", bench_image, "plain", runtime=RUNTIME_OPENVINO,
                                 precision=PRECISION_BF16),
    }
    count = cores()
    thread_grid = [(1, 1), (count, 1), (count, 2), (0, 0)] if not options.quick else [(1, 1), (0, 0)]
    middle = (8,) if not options.quick else (2,)
    threads = {f"intra{intra}_inter{inter}": measure(f"threads intra={intra} inter={inter}", infer, "plain",
                                                    threads=(intra, inter), sizes=middle)
               for intra, inter in thread_grid}
    # Quick mode times the default model alone: the bench model's runs are the same phases on another size.
    timed = {f"default model ({options.run.parent.name}/model)": options.run.parent / "model"}
    if not options.quick:
        timed[f"bench model, {size} px"] = models["plain"]
    first_prediction = _first_prediction(project, timed, options)
    # The roofline's ceiling is measured in the run (a GEMM in the inference image); the one derived from
    # /proc/cpuinfo's clock is kept beside it where the clock is reported.
    peak = variants["tensorflow"].get("peak_fp32") or derived_peak_fp32()
    summary = summarize_inference(variants, threads, size, first_prediction, peak, count)
    summary["peak_fp32_derived"] = derived_peak_fp32()
    return summary


def _first_prediction(project: Project, models: dict[str, Path], options: InferenceBenchOptions) -> dict:
    """From typing `coldchain infer` on one image to its output, as a separate process each time: the
    first run with no kept golden check (the probe runs), then runs that use the one it kept. Each
    run's summary breaks its wait down (contract.STARTUP_PHASES); the median run's breakdown is kept."""
    results = {}
    with tempfile.TemporaryDirectory(prefix="coldchain-bench-") as tmp:
        sample = Path(tmp) / "inputs"
        sample.mkdir()
        (sample / "sample.png").write_bytes(base64.b64decode(ONE_PIXEL_PNG))
        for name, model in models.items():
            shutil.rmtree(project.build_dir / CACHE_DIR, ignore_errors=True)  # the first run: nothing kept
            runs = []
            for _ in range(2 if options.quick else 4):
                completed = subprocess.run([sys.executable, "-m", "coldchain", "infer", FLAG_MODEL, str(model),
                                            FLAG_INPUT, str(sample), FLAG_OUTPUT, str(Path(tmp) / "p.jsonl")],
                                           cwd=project.root, env=dict(os.environ, COLDCHAIN_PREFIX=options.prefix),
                                           capture_output=True, text=True, timeout=900, check=False)
                if completed.returncode != 0:
                    raise ColdchainError(f"bench: coldchain infer on {model} failed (exit {completed.returncode})",
                                         log_tail=completed.stderr[-3000:], fix="run it alone to see why")
                summary = json.loads(completed.stdout)
                runs.append({"cached": "cached" in summary["golden"], **summary[STARTUP_KEY]})
            kept = sorted((run for run in runs[1:] if run["cached"]), key=lambda run: run["total_s"])
            results[name] = {"probe_run": runs[0], "kept_check_median": kept[len(kept) // 2] if kept else None,
                             "kept_check_runs": len(kept)}
    return {"models": results, "what": "`coldchain infer --model M --input one.png` as typed, to its output"}


def summarize_inference(variants: dict, threads: dict, size: int, first_prediction: dict, peak: dict, count: int) -> dict:
    gflops = next(report["flops"]["gflops_per_image"] for report in variants.values() if "flops" in report)
    table = {}
    for name, report in variants.items():
        rows = {}
        for row in report.get("batches", []):
            achieved = row["images_per_second"] * gflops
            rows[str(row["batch"])] = {**row, "gflops_per_s": round(achieved, 1),
                                       "fraction_of_peak": round(achieved / peak["gflops"], 3) if peak.get("gflops")
                                       else None}
        table[name] = {"golden_ok": report["golden"]["ok"], "batches": rows, "numerics": report.get("numerics"),
                       **{key: report[key] for key in ("onnxruntime", "tf2onnx", "openvino", "conversion_s", "runtime",
                                                       "error") if key in report}}
    best_threads = max(threads.items(), key=lambda item: item[1]["batches"][0]["images_per_second"]
                       if item[1].get("batches") else 0.0)
    ratio = None
    tf8 = table["tensorflow"]["batches"].get("8") or next(iter(table["tensorflow"]["batches"].values()), None)
    ort8 = table["onnxruntime"]["batches"].get("8") or next(iter(table["onnxruntime"]["batches"].values()), None)
    if tf8 and ort8:
        ratio = round(tf8["images_per_second"] / ort8["images_per_second"], 3)
    return {
        **fastest_runtimes(table),
        "input_size": size, "gflops_per_image": gflops,
        "flops_by_op": next(report["flops"]["by_op"] for report in variants.values() if "flops" in report),
        "peak_fp32": peak, "variants": table,
        "tf_over_onnxruntime_at_batch_8": ratio,
        "threads": {name: report["batches"][0] for name, report in threads.items() if report.get("batches")},
        "recommended_threads": best_threads[0],
        "tensorflow_profile_top_ops": variants["tensorflow"].get("profile", []),
        "first_prediction": first_prediction,
        "cores": count,
    }


def fastest_runtimes(table: dict) -> dict:
    """What `infer --runtime fastest` would pick at batch 8 among the variants that passed the golden
    check, at fp32 and (where the runtime computed in it) bf16, and bf16's speed over TensorFlow fp32."""
    def at_8(name: str):
        rows = table.get(name, {}).get("batches", {})
        row = rows.get("8") or next(iter(rows.values()), None)
        return row["images_per_second"] if row else None

    def effective(name: str) -> str:
        return (table[name].get("runtime") or {}).get("precision_effective") or "fp32"

    passed = {name: at_8(name) for name, variant in table.items() if variant.get("golden_ok") and at_8(name)}
    fp32 = {name: speed for name, speed in passed.items() if effective(name) == "fp32"}
    bf16 = {name: speed for name, speed in passed.items() if effective(name) == "bf16"}
    best32 = max(fp32, key=fp32.get) if fp32 else None
    best16 = max(bf16, key=bf16.get) if bf16 else None
    tf32 = fp32.get("tensorflow")
    return {"fastest_fp32_at_batch_8": {"variant": best32, "images_per_second": fp32.get(best32)} if best32 else None,
            "fastest_bf16_at_batch_8": {"variant": best16, "images_per_second": bf16.get(best16),
                                        "over_tensorflow_fp32": round(bf16[best16] / tf32, 3) if tf32 else None}
            if best16 else None}
