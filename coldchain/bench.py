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
from .engine import Engine, ImageInfo
from .fsutil import atomic_write_text
from .images import BuildOptions, build_image, build_images

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchOptions:
    devices: tuple[str, ...] = ("cpu",)
    cold: bool = True  # also time builds that ignore Docker's layer cache
    repeats: int = 3
    prefix: str = "coldchain"


def cpu_model() -> str:
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


def _drop_if_orphaned(engine: Engine, previous: ImageInfo | None) -> None:
    """A cold build makes new layers of everything; the image it replaced is a full copy nobody tags."""
    if previous is None:
        return
    now = engine.inspect_image(previous.id)
    if now is not None and not now.tags:
        engine.remove_image(previous.id)


def bench_images(engine: Engine, project: Project, options: BenchOptions) -> dict:
    results: dict = {"images": {}}
    for device in options.devices:
        specs = [spec for spec in IMAGES.values() if spec.device == device]
        build_images(engine, project, specs, BuildOptions(prefix=options.prefix))  # make sure they exist
        for spec in specs:
            entry: dict = {}
            if options.cold:
                previous = engine.inspect_image(spec.tag(options.prefix))
                seconds, built = _timed(lambda: build_image(engine, project, spec,
                                                            BuildOptions(prefix=options.prefix, nocache=True)))
                entry["cold_build_s"] = round(seconds, 1)
                _drop_if_orphaned(engine, previous)
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
    results["meta"] = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "cpu": cpu_model(),
                       "cores": __import__("os").cpu_count(), "python": platform.python_version()}
    atomic_write_text(target, json.dumps(results, indent=2, sort_keys=True) + "\n")
    return target


# --- inference speed -----------------------------------------------------------------------------

FMA_PIPES_PER_CORE = 2  # Zen 2-4 and Intel server cores since Haswell issue two FMAs per cycle


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


def peak_fp32() -> dict:
    """The FP32 ceiling from the CPU itself: cores x clock x SIMD lanes x 2 (an FMA is two FLOPs)
    x FMA pipes. The clock is what /proc/cpuinfo reports (nominal on most VMs); vCPUs count as
    cores, which overstates the peak where two vCPUs share one core (SMT)."""
    import os

    flags: set[str] = set()
    mhz = 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("cpu MHz") and not mhz:
                mhz = float(line.split(":", 1)[1])
    except OSError:
        pass
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags or "avx" in flags else 4
    fma = 2 if "fma" in flags or "avx512f" in flags else 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    gflops = cores * (mhz / 1e3) * lanes * fma * FMA_PIPES_PER_CORE
    return {"gflops": round(gflops, 1), "cores": cores, "ghz": round(mhz / 1e3, 3), "fp32_lanes": lanes,
            "fma": fma == 2, "fma_pipes_per_core": FMA_PIPES_PER_CORE,
            "derivation": f"{cores} cores x {mhz / 1e3:.3f} GHz x {lanes} FP32 lanes x {fma} (FMA) x "
                          f"{FMA_PIPES_PER_CORE} pipes"}


def _json_from(result, what: str, spec) -> dict:
    from .errors import ContainerError

    if result.exit_code != 0:
        ours = [line for line in result.stderr.splitlines() if line.startswith("coldchain: error:")]
        raise ContainerError(f"{what} failed: {ours[-1] if ours else f'exit {result.exit_code}'}", image=spec.image,
                             command=list(spec.command), container_exit=result.exit_code,
                             log_tail="\n".join(result.stderr.splitlines()[-30:]))
    return json.loads(result.stdout.strip().splitlines()[-1])


def bench_inference(engine: Engine, project: Project, options: InferenceBenchOptions) -> dict:
    """TF (oneDNN on/off, folded graph) and ONNX Runtime on the same frozen graph, in one run."""
    import os

    from .config import BENCH_IMAGE, KIT_LABEL, RUN_LABEL
    from .errors import ColdchainError
    from .drift import image_identity, produce, tree_fingerprint
    from .engine import Mount, RunSpec
    from .pipeline import StepConfig, container_user

    if not (options.run / "config.json").is_file():
        from .errors import UsageError

        raise UsageError(f"{options.run}: no training run to freeze the benchmark model from",
                         fix="run 'make train' first (make bench does)")
    train, infer = build_images(engine, project, [IMAGES["train-cpu"], IMAGES["infer-cpu"]],
                                BuildOptions(prefix=options.prefix))
    (bench_image,) = build_images(engine, project, [BENCH_IMAGE], BuildOptions(prefix=options.prefix))
    size = 64 if options.quick else options.input_size
    run_fingerprint = tree_fingerprint(options.run)
    models = {}
    for name, extra in (("plain", ()), ("folded", ("--fold-batch-norm", "--strip-unused"))):
        arguments = ("--run", "/run", "--input-size", str(size), *extra)
        step = StepConfig(name="freeze", role="train", module="freeze", output=(options.out / f"model-{size}-{name}").resolve(),
                          inputs={"/run": options.run.resolve()}, arguments=arguments, prefix=options.prefix,
                          run_id=options.run_id)
        produce(engine, project, step, train, {"image": image_identity(train), "args": list(arguments),
                                               "run": run_fingerprint})
        models[name] = step.output
    batches = (1, 2) if options.quick else options.batches
    repeats = 2 if options.quick else options.repeats

    def measure(label: str, image, model: str, runtime: str = "tensorflow", environment: dict | None = None,
                threads: tuple[int, int] = (0, 0), sizes=batches, profile: bool = False) -> dict:
        command = ["python", "-m", "incontainer.bench_infer", "--model", "/model", "--runtime", runtime,
                   "--repeats", str(repeats), "--intra-op-threads", str(threads[0]),
                   "--inter-op-threads", str(threads[1])] + [arg for b in sizes for arg in ("--batch", str(b))]
        if profile:
            command.append("--profile")
        log.info("bench: %s (%s, batches %s)", label, image.tag, list(sizes))
        spec = RunSpec(image=image.info.id, command=tuple(command), mounts=(Mount(models[model], "/model", read_only=True),),
                       environment=environment or {}, user=container_user(),
                       labels={KIT_LABEL: "coldchain", RUN_LABEL: options.run_id})
        try:
            return _json_from(engine.run(spec), f"bench {label}", spec)
        except ColdchainError as error:
            # One broken runtime must not hide the others' numbers; the report names what failed.
            log.warning("bench: %s failed: %s", label, error.message)
            return {"error": error.message, "log_tail": error.log_tail, "golden": {"ok": False}, "batches": []}

    variants = {
        "tensorflow": measure("tensorflow", infer, "plain", profile=True),
        "tensorflow_onednn_on": measure("tensorflow, oneDNN on", infer, "plain", environment={"TF_ENABLE_ONEDNN_OPTS": "1"}),
        "tensorflow_onednn_off": measure("tensorflow, oneDNN off", infer, "plain", environment={"TF_ENABLE_ONEDNN_OPTS": "0"}),
        "tensorflow_folded": measure("tensorflow, folded + stripped graph", infer, "folded"),
        "onnxruntime": measure("onnxruntime", bench_image, "plain", runtime="onnxruntime"),
    }
    cores = peak_fp32()["cores"]
    thread_grid = [(1, 1), (cores, 1), (cores, 2), (0, 0)] if not options.quick else [(1, 1), (0, 0)]
    middle = (8,) if not options.quick else (2,)
    threads = {f"intra{intra}_inter{inter}": measure(f"threads intra={intra} inter={inter}", infer, "plain",
                                                    threads=(intra, inter), sizes=middle)
               for intra, inter in thread_grid}
    first_prediction = _first_prediction(engine, infer, models["plain"], options)
    return summarize_inference(variants, threads, size, first_prediction, peak_fp32(), os.cpu_count() or 1)


def _first_prediction(engine: Engine, image, model: Path, options: InferenceBenchOptions) -> dict:
    """Container start to first prediction: `docker run` of incontainer.infer on one image."""
    from .config import KIT_LABEL, RUN_LABEL
    from .pipeline import container_user
    from .engine import Mount, RunSpec

    import tempfile

    with tempfile.TemporaryDirectory(prefix="coldchain-bench-") as tmp:
        sample = Path(tmp) / "inputs"
        sample.mkdir()
        probe = Path(tmp) / "sample.png"
        # A real PNG from the golden raw probe would need numpy on the host; a 1-pixel PNG is enough
        # for the timing (it is resized like any image).
        import base64

        probe.write_bytes(base64.b64decode(
            "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"))
        (sample / "sample.png").write_bytes(probe.read_bytes())
        sample.chmod(0o755)
        (sample / "sample.png").chmod(0o644)
        timings = []
        for _ in range(1 if options.quick else 3):
            start = time.perf_counter()
            spec = RunSpec(image=image.info.id, command=("python", "-m", "incontainer.infer", "--model", "/model",
                                                         "--output", "/tmp/p.jsonl", "/inputs"),
                           mounts=(Mount(model, "/model", read_only=True), Mount(sample, "/inputs", read_only=True)),
                           user=container_user(), labels={KIT_LABEL: "coldchain", RUN_LABEL: options.run_id})
            result = engine.run(spec)
            timings.append(time.perf_counter() - start)
            _json_from(result, "first prediction", spec)
    return {"seconds_median": round(statistics.median(timings), 2), "runs": len(timings),
            "what": "docker run -> TF import -> sha256 + doctor -> golden probe -> 1 image predicted -> exit"}


def summarize_inference(variants: dict, threads: dict, size: int, first_prediction: dict, peak: dict, cores: int) -> dict:
    gflops = next(report["flops"]["gflops_per_image"] for report in variants.values() if "flops" in report)
    table = {}
    for name, report in variants.items():
        rows = {}
        for row in report.get("batches", []):
            achieved = row["images_per_second"] * gflops
            rows[str(row["batch"])] = {**row, "gflops_per_s": round(achieved, 1),
                                       "fraction_of_peak": round(achieved / peak["gflops"], 3) if peak["gflops"] else None}
        table[name] = {"golden_ok": report["golden"]["ok"], "batches": rows,
                       **{key: report[key] for key in ("onnxruntime", "tf2onnx", "conversion_s", "error") if key in report}}
    best_threads = max(threads.items(), key=lambda item: item[1]["batches"][0]["images_per_second"]
                       if item[1].get("batches") else 0.0)
    ratio = None
    tf8 = table["tensorflow"]["batches"].get("8") or next(iter(table["tensorflow"]["batches"].values()), None)
    ort8 = table["onnxruntime"]["batches"].get("8") or next(iter(table["onnxruntime"]["batches"].values()), None)
    if tf8 and ort8:
        ratio = round(tf8["images_per_second"] / ort8["images_per_second"], 3)
    return {
        "input_size": size, "gflops_per_image": gflops,
        "flops_by_op": next(report["flops"]["by_op"] for report in variants.values() if "flops" in report),
        "peak_fp32": peak, "variants": table,
        "tf_over_onnxruntime_at_batch_8": ratio,
        "threads": {name: report["batches"][0] for name, report in threads.items() if report.get("batches")},
        "recommended_threads": best_threads[0],
        "tensorflow_profile_top_ops": variants["tensorflow"].get("profile", []),
        "first_prediction": first_prediction,
        "cores": cores,
    }


def drift_timing(project: Project) -> dict:
    """The wall time of the last `make drift-test` (its report records it), cold or warm as it ran."""
    report = project.root / "out" / "drift" / "drift-report.json"
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError):
        return {}
    reused = all(env.get("reused") for env in data.get("environments", {}).values())
    return {"last_run": {**data.get("timing", {}), "images_all_cached": reused, "generated": data.get("generated"),
                         "cases": data.get("counts", {}).get("cases")}}


def recommended_threads(project: Project) -> str:
    """INTRA,INTER for the manifest: the fastest setting `make bench` measured at batch 8 on this
    machine class (bench/results.json), else TensorFlow's own choice."""
    try:
        name = json.loads((project.root / "bench" / "results.json").read_text())["inference"]["full"]["recommended_threads"]
        intra, inter = name.removeprefix("intra").split("_inter")
        return f"{int(intra)},{int(inter)}"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "0,0"
