"""The drift test on the host: build every environment of the matrix from its lock, make the model
variants (re-freezes in the training image, re-exports in other environments), run every case
in its environment (incontainer.probe), compare each outcome with the expected one, and report.

The host never imports TensorFlow; all numbers come back as JSON from the containers."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .base import resolve_base
from .config import BASES, IMAGES, KIT_LABEL, LOCKS, RUN_LABEL, ImageSpec, Project
from .context import BuildContext
from .engine import Engine, ImageInfo, Mount, RunSpec
from .errors import BuildError, ColdchainError, UsageError
from .images import BuildOptions, BuiltImage, build_image, build_images, git_revision, same_inputs
from .locks import check_all, disagreements
from .matrix import DEFAULT_VARIANT, OP_BUILD_ENV, CaseSpec, EnvSpec, Matrix, VariantSpec, outcome_matches
from .bench import cpu_model
from .fsutil import atomic_write_text
from .pipeline import StepConfig, container_user, run_step

log = logging.getLogger(__name__)
TRAINING_LOCK = "train-cpu"
VARIANT_STAMP = ".coldchain-variant.json"
OP_BUILD_DOCKERFILE = "Dockerfile.opbuild"


@dataclass(frozen=True)
class DriftOptions:
    model: Path  # the default variant: make freeze's model directory
    run: Path  # the training run the freeze variants are made from
    out: Path  # report directory; variants go to out/models
    prefix: str = "coldchain"
    run_id: str = "coldchain"
    jobs: int = 1
    memory: str = "8g"


@dataclass
class CaseResult:
    case: CaseSpec
    env: EnvSpec
    image: str
    image_labels: dict
    expected: str
    outcome: str | None
    ok: bool
    probe: dict | None
    lock_drift: list[str]
    seconds: float
    error: str | None = None
    reasons: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        probe = self.probe or {}
        return {
            "name": self.case.name, "scenario": self.case.scenario, "description": self.case.description,
            "env": self.env.name, "variant": self.case.variant, "settings": asdict(self.case.settings),
            "image": self.image, "tensorflow": self.image_labels.get("io.coldchain.tensorflow.version"),
            "python": self.image_labels.get("io.coldchain.python.version"),
            "device": self.env.device, "expected": self.expected, "outcome": self.outcome, "ok": self.ok,
            "reasons": self.reasons, "error": self.error, "lock_drift": self.lock_drift,
            "loaded": probe.get("loaded"), "runtime_outcome": probe.get("outcome"),
            "diagnosis": probe.get("diagnosis"), "load_error": probe.get("load_error"),
            "preprocessing": probe.get("preprocessing"), "golden": probe.get("golden"),
            "latency": probe.get("latency"), "seconds": round(self.seconds, 2),
        }


def drift_image_spec(env: EnvSpec) -> ImageSpec:
    if env.image:
        return IMAGES[env.image]
    return ImageSpec("infer", env.device, str(env.lock), LOCKS[str(env.lock)].base, env=env.name)


def build_environments(engine: Engine, project: Project, matrix: Matrix, options: DriftOptions,
                       needed: set[str]) -> dict[str, BuiltImage]:
    """Every environment image the selected cases and variants need, from its own lock."""
    build_options = BuildOptions(prefix=options.prefix)
    built: dict[str, BuiltImage] = {}
    for name in sorted(needed):
        env = matrix.envs[name]
        spec = drift_image_spec(env)
        log.info("environment %s: %s", name, f"kit image {env.image}" if env.image else f"{LOCKS[spec.lock].lock}")
        (built[name],) = build_images(engine, project, [spec], build_options)
    return built


def build_opbuild_image(engine: Engine, project: Project, train: BuiltImage, prefix: str) -> BuiltImage:
    """The custom-op build image: the training venv on a base with g++, the op compiled at build time."""
    base_spec = BASES["bookworm-devel"]
    base = resolve_base(engine, project, base_spec)
    context = BuildContext()
    context.add_file(OP_BUILD_DOCKERFILE, project.path(OP_BUILD_DOCKERFILE))
    context.add_tree("drift/ops", project.path("drift/ops"))
    labels = {KIT_LABEL: "coldchain", "io.coldchain.role": "opbuild", "io.coldchain.device": "cpu",
              "io.coldchain.train.image": image_identity(train), "io.coldchain.context.sha256": context.fingerprint(),
              "io.coldchain.tensorflow.version": train.info.labels.get("io.coldchain.tensorflow.version", ""),
              "io.coldchain.python.version": train.info.labels.get("io.coldchain.python.version", ""),
              "org.opencontainers.image.revision": git_revision(project.root),
              "org.opencontainers.image.base.name": base.ref}
    tag = f"{prefix}-opbuild:cpu"
    existing = engine.inspect_image(tag)
    spec = ImageSpec("opbuild", "cpu", TRAINING_LOCK, "bookworm-devel")
    if existing and same_inputs(existing.labels, labels):
        log.info("%s is up to date (%s)", tag, existing.id[:19])
        return BuiltImage(spec, tag, existing, base, reused=True)
    project.build_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=project.build_dir, prefix="context-opbuild-") as tmp:
        tarball = Path(tmp) / "context.tar"
        context.write(tarball)
        log.info("building %s (compiles drift/ops against TensorFlow %s)", tag,
                 labels["io.coldchain.tensorflow.version"])
        info = engine.build(tarball, dockerfile=OP_BUILD_DOCKERFILE,
                            buildargs={"TRAIN_IMAGE": train.info.id, "BASE_IMAGE": base.image_id},
                            labels=labels, tag=tag, log=lambda line: log.debug("opbuild | %s", line))
    return BuiltImage(spec, tag, info, base, reused=False)


def tree_fingerprint(root: Path, skip_prefixes: tuple[str, ...] = ("events.out.tfevents", ".")) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.startswith(skip_prefixes):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def make_variants(engine: Engine, project: Project, matrix: Matrix, options: DriftOptions,
                  needed: set[str], images: dict[str, BuiltImage]) -> dict[str, Path]:
    """Model directory per variant; made only when its inputs changed since the last run."""
    paths: dict[str, Path] = {}
    if DEFAULT_VARIANT in needed or any(matrix.variants[v].source == DEFAULT_VARIANT and matrix.variants[v].reexport_env
                                        for v in needed):
        if not (options.model / "manifest.json").is_file():
            raise UsageError(f"{options.model}: no frozen model (manifest.json missing)",
                             fix="run 'make freeze' first, or pass --model DIR")
        paths[DEFAULT_VARIANT] = options.model.resolve()
    models_dir = options.out / "models"
    run_fingerprint = None
    train_image = opbuild_image = None
    wanted = set(needed) | {matrix.variants[name].source for name in needed if matrix.variants[name].reexport_env}
    # Freezes first: a re-export may start from one of them.
    for name in sorted(wanted - {DEFAULT_VARIANT}, key=lambda n: (matrix.variants[n].kind == "reexport", n)):
        variant = matrix.variants[name]
        target = models_dir / name
        if variant.kind == "freeze":
            if not (options.run / "config.json").is_file():
                raise UsageError(f"{options.run}: no training run (config.json missing)",
                                 fix="run 'make train' first, or pass --run DIR")
            if train_image is None:
                train_image = build_images(engine, project, [IMAGES["train-cpu"]], BuildOptions(prefix=options.prefix))[0]
            image = train_image
            if variant.freeze_in == OP_BUILD_ENV:
                opbuild_image = opbuild_image or build_opbuild_image(engine, project, train_image, options.prefix)
                image = opbuild_image
            run_fingerprint = run_fingerprint or tree_fingerprint(options.run)
            key = {"kind": "freeze", "image": image_identity(image), "args": list(variant.freeze_args), "run": run_fingerprint}
            step = StepConfig(name="freeze", role="train", module="freeze", output=target.resolve(),
                              inputs={"/run": options.run.resolve()}, arguments=("--run", "/run", *variant.freeze_args),
                              memory=options.memory, prefix=options.prefix, run_id=options.run_id)
        else:
            image = images[str(variant.reexport_env)]
            source = paths[variant.source]
            key = {"kind": "reexport", "image": image_identity(image), "strip": variant.strip_default_attrs,
                   "model": tree_fingerprint(source)}
            arguments = ("--model", "/model") + (("--strip-default-attrs",) if variant.strip_default_attrs else ())
            step = StepConfig(name="reexport", role="infer", module="reexport", output=target.resolve(),
                              inputs={"/model": source}, arguments=arguments, memory=options.memory,
                              prefix=options.prefix, run_id=options.run_id)
        log.info("variant %s: %s", name, "up to date" if produce(engine, project, step, image, key) is None
                 else f"{step.module} in {image.tag}")
        paths[name] = target.resolve()
    return paths


def image_identity(image: BuiltImage) -> str:
    """What an image computes with: its inputs' fingerprint, not its id (which a new commit's
    revision label changes without changing a byte that matters)."""
    labels = image.info.labels
    if "io.coldchain.context.sha256" not in labels:
        return image.info.id
    return labels["io.coldchain.context.sha256"] + labels.get("io.coldchain.train.image", "")


def produce(engine: Engine, project: Project, step: StepConfig, image: BuiltImage, key: dict) -> Path | None:
    """Run the step unless its output carries a stamp of the same inputs; None when reused."""
    import fcntl

    stamp = step.output / VARIANT_STAMP
    step.output.parent.mkdir(parents=True, exist_ok=True)
    # Concurrent runs in one checkout: the second waits, then finds the first one's stamp.
    with open(step.output.parent / f".{step.output.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.is_file() and json.loads(stamp.read_text()) == key:
            return None
        run_step(engine, project, step, image)
        atomic_write_text(stamp, json.dumps(key, sort_keys=True))
    return step.output


def lock_drift(project: Project, env: EnvSpec) -> list[str]:
    """Packages the environment's lock pins at another version than the training lock."""
    if env.lock_name == TRAINING_LOCK:
        return []
    locks = check_all(project, [TRAINING_LOCK, env.lock_name])
    return disagreements(locks[TRAINING_LOCK], locks[env.lock_name])


def probe_command(case: CaseSpec) -> tuple[str, ...]:
    settings = case.settings
    command = ["python", "-m", "incontainer.probe", "--model", "/model"]
    if settings.load_op_libraries:
        command.append("--load-op-libraries")
    if settings.allow_soft_placement:
        command.append("--allow-soft-placement")
    if settings.intra_op_threads:
        command += ["--intra-op-threads", str(settings.intra_op_threads)]
    if settings.inter_op_threads:
        command += ["--inter-op-threads", str(settings.inter_op_threads)]
    for item in settings.preprocessing:
        command += ["--preprocessing", item]
    return tuple(command)


def run_case(engine: Engine, project: Project, case: CaseSpec, env: EnvSpec, image: BuiltImage, model: Path,
             options: DriftOptions) -> CaseResult:
    started = time.perf_counter()
    drift = lock_drift(project, env)
    spec = RunSpec(image=image.info.id, command=probe_command(case), mounts=(Mount(model, "/model", read_only=True),),
                   environment=dict(case.settings.environment), user=container_user(), mem_limit=options.memory,
                   gpus=env.device == "cuda" and engine.gpu_runtime(),
                   labels={KIT_LABEL: "coldchain", RUN_LABEL: options.run_id},
                   name=f"{options.run_id}-drift-{case.name}"[:120])
    probe = None
    error = None
    result = engine.run(spec, log=lambda line: log.debug("%s | %s", case.name, line))
    if result.exit_code == 0:
        try:
            # Findings name /model; the report names the variant's directory on this host.
            escaped = json.dumps(str(model))[1:-1]  # the path goes inside JSON strings
            stdout = re.sub(r"(?<![\w/])/model(?![\w-])", lambda _: escaped, result.stdout.strip().splitlines()[-1])
            probe = json.loads(stdout)
        except (json.JSONDecodeError, IndexError):
            error = f"probe printed no JSON (stdout: {result.stdout[-300:]!r})"
    else:
        ours = [line for line in result.stderr.splitlines() if line.startswith("coldchain: error:")]
        meaning = "killed for exceeding its memory limit" if result.oom_killed else f"exit {result.exit_code}"
        error = (ours[-1] if ours else f"probe failed ({meaning})") + \
            ("\n" + "\n".join(result.stderr.strip().splitlines()[-8:]) if not ours else "")
    outcome = probe.get("outcome") if probe else "error"
    if env.must_match_training_lock and drift:
        outcome = "lock-drift"
    ok = outcome_matches(case.expect, outcome)
    reasons = []
    if not ok:
        reasons.append(f"expected {case.expect}, got {outcome}")
        if probe and probe.get("diagnosis", {}).get("findings"):
            first = probe["diagnosis"]["findings"][0]
            reasons.append(f"{first['code']}: {first['cause']}")
        if error:
            reasons.append(error)
    return CaseResult(case=case, env=env, image=image.tag, image_labels=image.info.labels, expected=case.expect,
                      outcome=outcome, ok=ok, probe=probe, lock_drift=drift, seconds=time.perf_counter() - started,
                      error=error, reasons=reasons)


def run_drift_test(engine: Engine, project: Project, matrix: Matrix, options: DriftOptions) -> dict:
    started = time.perf_counter()
    needed_variants = {case.variant for case in matrix.cases}
    needed_envs = {case.env for case in matrix.cases} | \
        {str(matrix.variants[v].reexport_env) for v in needed_variants if matrix.variants[v].reexport_env}
    phases = {}
    t = time.perf_counter()
    images = build_environments(engine, project, matrix, options, needed_envs)
    phases["environments_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    models = make_variants(engine, project, matrix, options, needed_variants, images)
    phases["variants_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    results: list[CaseResult] = []
    jobs = max(1, options.jobs)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=jobs)
    futures = {pool.submit(run_case, engine, project, case, matrix.envs[case.env], images[case.env],
                           models[case.variant], options): case for case in matrix.cases}
    try:
        for future in concurrent.futures.as_completed(futures):
            case = futures[future]
            try:
                result = future.result()
            except ColdchainError as error:
                result = CaseResult(case=case, env=matrix.envs[case.env], image=images[case.env].tag,
                                    image_labels=images[case.env].info.labels, expected=case.expect, outcome="error",
                                    ok=False, probe=None, lock_drift=[], seconds=0.0, error=error.message,
                                    reasons=[error.message])
            log.info("%-28s %-24s expected %-24s got %-24s %s", case.name, case.env, case.expect, result.outcome,
                     "ok" if result.ok else "UNEXPECTED")
            results.append(result)
    except BaseException:
        # Ctrl-C (or a crash): stop what is queued and kill what runs now, instead of waiting for it.
        for future in futures:
            future.cancel()
        engine.remove_containers(f"{RUN_LABEL}={options.run_id}")
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    phases["cases_s"] = round(time.perf_counter() - t, 1)
    order = {case.name: index for index, case in enumerate(matrix.cases)}
    results.sort(key=lambda r: order[r.case.name])
    environments = {}
    for name in sorted(needed_envs):
        env, image = matrix.envs[name], images[name]
        environments[name] = {"description": env.description, "image": image.tag, "image_id": image.info.id,
                              "size_bytes": image.info.size, "reused": image.reused,
                              "lock": LOCKS[drift_image_spec(env).lock].lock, "device": env.device,
                              "tensorflow": image.info.labels.get("io.coldchain.tensorflow.version"),
                              "python": image.info.labels.get("io.coldchain.python.version"),
                              "must_match_training_lock": env.must_match_training_lock}
    return {
        "matrix": str(matrix.path.relative_to(project.root)) if matrix.path.is_relative_to(project.root) else str(matrix.path),
        "reference_env": matrix.reference_env,
        "model": str(options.model), "model_sha256": _manifest_sha(options.model),
        "ok": all(result.ok for result in results),
        "counts": {"cases": len(results), "as_expected": sum(r.ok for r in results),
                   "unexpected": sum(not r.ok for r in results)},
        "environments": environments,
        "variants": {name: str(path) for name, path in sorted(models.items())},
        "cases": [result.to_json() for result in results],
        "tensorflow_versions": tensorflow_summary(results),
        "timing": {**phases, "total_s": round(time.perf_counter() - started, 1), "jobs": jobs},
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host_cpu": f"{cpu_model()} ({os.cpu_count()} cores)",
    }


def render_heatmap(engine: Engine, project: Project, report_json: Path, image: BuiltImage, options: DriftOptions) -> Path:
    """The heatmap PNG, drawn by incontainer.heatmap in the inference image (Pillow lives there)."""
    target = report_json.with_name("drift-heatmap.png")
    step = StepConfig(name="heatmap", role="infer", module="heatmap", output=target.resolve(),
                      inputs={"/report": report_json.parent.resolve()},
                      arguments=("--report", f"/report/{report_json.name}"), memory="1g", prefix=options.prefix,
                      run_id=options.run_id, output_is_file=True)
    run_step(engine, project, step, image)
    return target


def _manifest_sha(model: Path) -> str | None:
    try:
        return json.loads((model / "manifest.json").read_text())["model"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def tensorflow_summary(results: list[CaseResult]) -> list[dict]:
    """Which TF versions load the default frozen graph and how far their logits move."""
    rows = {}
    for result in results:
        if result.case.variant != DEFAULT_VARIANT or result.case.settings.environment or result.case.settings.preprocessing:
            continue
        probe = result.probe or {}
        golden = probe.get("golden") or {}
        logits = next((t for t in golden.get("tensors", []) if t["key"] == "logits"), {})
        version = result.image_labels.get("io.coldchain.tensorflow.version") or "?"
        rows.setdefault(version, {
            "tensorflow": version, "python": result.image_labels.get("io.coldchain.python.version"),
            "env": result.env.name, "loads": bool(probe.get("loaded")), "outcome": probe.get("outcome"),
            "logits_max_abs_diff": logits.get("max_abs_diff"), "logits_max_rel_diff": logits.get("max_rel_diff"),
            "bit_exact": golden.get("bit_exact"),
        })
    return sorted(rows.values(), key=lambda row: [int(p) if p.isdigit() else 0 for p in row["tensorflow"].split(".")])


def default_jobs() -> int:
    """One TF process already uses every core for a batch; run two at once only with four or more."""
    return max(1, (os.cpu_count() or 1) // 2) if (os.cpu_count() or 1) >= 4 else 1



def heatmap_image(engine: Engine, project: Project, options: DriftOptions) -> BuiltImage:
    return build_images(engine, project, [IMAGES["infer-cpu"]], BuildOptions(prefix=options.prefix))[0]
