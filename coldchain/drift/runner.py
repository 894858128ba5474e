"""The drift test on the host: build every environment of the matrix from its lock, make the model
variants (re-freezes in the training image, re-exports in other environments), run every case in
its environment (the probe), compare each outcome and its findings with the expected ones, and
assemble the report. The host never imports TensorFlow; all numbers come back as JSON."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..cache import image_identity, produce, tree_fingerprint
from ..config import IMAGES, RUN_LABEL, Project
from ..contract import (EXPECT_AS_PRECISION, EXPECT_AS_REFERENCE, FLAG_ALLOW_SOFT_PLACEMENT, FLAG_BF16_TOLERANCE,
                        FLAG_CONVERSION_CACHE, FLAG_LOAD_OP_LIBRARIES, FLAG_PRECISION, FLAG_RUNTIME, GOLDEN_LOGITS_KEY,
                        MANIFEST_FILE, MOUNT_CONVERSIONS, MOUNT_MODEL, MOUNT_MODELS, MOUNT_REPORT, MOUNT_RUN,
                        OUTCOME_NOT_APPLICABLE, PRECISION_BF16, PRECISION_FP32, RUN_CONFIG_FILE, RUNTIME_ONNXRUNTIME,
                        RUNTIME_TENSORFLOW, SEVERITY_WARNING, Code, ProbeReport,
                        describe_numerics, numerics_differences)
from ..engine import Engine, Mount
from ..environments.images import BuildOptions, BuiltImage, ensure_image
from ..environments.locks import check_all, check_fresh, disagreements
from ..environments.opbuild import build_opbuild_image
from ..errors import ColdchainError
from ..fsutil import file_sha256
from ..hostinfo import cpu_class, cpu_description, numerics_flags
from ..steps.pipeline import StepConfig, run_step
from ..steps.convert import memory_for
from ..steps.model_argument import model_directory
from ..steps.runner import Image, ModuleRun, hand_to_container_user, run_module
from .report import REPORT_HEATMAP
from .shards import Shard, assign, measured_costs
from ..environments.matrix import DEFAULT_VARIANT, OP_BUILD_ENV, CaseSpec, EnvSpec, Matrix
from .judging import outcome_matches, required_findings, resolve_expectation

log = logging.getLogger(__name__)
TRAINING_LOCK = "train-cpu"
CASE_TIMEOUT_S = 900.0
VARIANT_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class DriftOptions:
    model: Path  # the default variant: make freeze's (or adopt's) model directory
    run: Path | None  # the training run freeze variants are made from; None for an adopted model
    out: Path  # report directory; variants go to out/models
    prefix: str = "coldchain"
    run_id: str = "coldchain"
    jobs: int = 1
    memory: str = "8g"
    shard: Shard | None = None  # run only this shard's cases (drift.shards)
    costs: Path | None = None  # an earlier report whose measured case times balance the shards
    isolate: bool = False  # one container per case, even where cases could share one


@dataclass
class CaseResult:
    case: CaseSpec
    env: EnvSpec
    image: str
    image_labels: dict
    expected: str  # as the matrix says it
    resolved: str  # what it means for this case (as-reference -> bit-exact or pass)
    outcome: str | None
    ok: bool
    probe: dict | None
    lock_drift: list[str]
    seconds: float
    error: str | None = None
    reasons: list[str] = field(default_factory=list)
    findings: list[dict] = field(default_factory=list)  # the host's own (lock drift)
    reference_numerics: dict | None = None
    numerics_differences: list[str] | None = None
    container_s: float | None = None  # the wall time of the container the case ran in
    shared_with: int = 1  # how many cases that container ran
    overhead_s: float | None = None  # this case's share of the container's time outside every probe

    def to_json(self) -> dict:
        probe = self.probe or {}
        timing = dict(probe.get("timing") or {})
        timing["case_s"] = probe.get("seconds")
        if self.container_s is not None:
            timing.update(container_s=round(self.container_s, 3), cases_in_container=self.shared_with)
        if self.overhead_s is not None:
            timing["container_overhead_s"] = round(self.overhead_s, 3)
        return {
            "name": self.case.name, "scenario": self.case.scenario, "description": self.case.description,
            "env": self.env.name, "variant": self.case.variant, "settings": asdict(self.case.settings),
            "image": self.image, "tensorflow": self.image_labels.get("io.coldchain.tensorflow.version"),
            "python": self.image_labels.get("io.coldchain.python.version"),
            "device": self.env.device, "expected": self.expected, "resolved_expectation": self.resolved,
            "expected_findings": list(self.case.expect_findings), "outcome": self.outcome, "ok": self.ok,
            "reasons": self.reasons, "error": self.error, "lock_drift": self.lock_drift,
            "findings": self.findings, "loaded": probe.get("loaded"), "runtime_outcome": probe.get("outcome"),
            "diagnosis": probe.get("diagnosis"), "load_error": probe.get("load_error"),
            "preprocessing": probe.get("preprocessing"), "golden": probe.get("golden"),
            "latency": probe.get("latency"), "numerics": probe.get("numerics"), "runtime": probe.get("runtime"),
            "reference_numerics": self.reference_numerics, "numerics_differences": self.numerics_differences,
            "numerics_summary": describe_numerics(probe.get("numerics")), "timing": timing,
            "seconds": round(self.seconds, 2),
        }


def needed(matrix: Matrix) -> tuple[set[str], set[str]]:
    variants = {case.variant for case in matrix.cases}
    envs = {case.env for case in matrix.cases} | \
        {str(matrix.variants[v].reexport_env) for v in variants if matrix.variants[v].reexport_env}
    return envs, variants


def build_environments(engine: Engine, project: Project, matrix: Matrix, options: DriftOptions,
                       names: set[str]) -> dict[str, BuiltImage]:
    """Every environment image the selected cases and variants need, each from its own lock."""
    built: dict[str, BuiltImage] = {}
    for name in sorted(names):
        env, spec = matrix.envs[name], matrix.image_spec(name)
        log.info("environment %s: %s", name, f"kit image {env.image}" if env.image else spec.locked.lock)
        built[name] = ensure_image(engine, project, spec, BuildOptions(prefix=options.prefix))
    return built


def make_variants(engine: Engine, project: Project, matrix: Matrix, options: DriftOptions,
                  names: set[str], images: dict[str, BuiltImage]) -> dict[str, Path | str]:
    """Model directory per variant, made only when its inputs changed since the last run; a variant
    that needs a training run this model does not have is the reason it is not applicable."""
    made: dict[str, Path | str] = {DEFAULT_VARIANT: model_directory(options.model)}
    has_run = options.run is not None and (options.run / RUN_CONFIG_FILE).is_file()
    run_fingerprint = None
    train_image = opbuild_image = None
    wanted = set(names) | {matrix.variants[name].source for name in names if matrix.variants[name].reexport_env}
    # Freezes first: a re-export may start from one of them.
    for name in sorted(wanted - {DEFAULT_VARIANT}, key=lambda n: (matrix.variants[n].kind == "reexport", n)):
        variant = matrix.variants[name]
        target = (options.out / "models" / name).resolve()
        if variant.needs_training_run(matrix.variants) and not has_run:
            made[name] = ("it re-freezes the kit's training run, and this model has none (an adopted model); pass "
                          "--run DIR to make it from a training run")
            continue
        if variant.kind == "freeze":
            if train_image is None:
                train_image = ensure_image(engine, project, IMAGES["train-cpu"], BuildOptions(prefix=options.prefix))
            image = train_image
            if variant.freeze_in == OP_BUILD_ENV:
                opbuild_image = opbuild_image or build_opbuild_image(engine, project, train_image,
                                                                     BuildOptions(prefix=options.prefix))
                image = opbuild_image
            run_fingerprint = run_fingerprint or tree_fingerprint(options.run)
            key = {"kind": "freeze", "image": image_identity(image.info.labels, image.info.id),
                   "args": list(variant.freeze_args), "run": run_fingerprint}
            step = StepConfig(name="freeze", role="train", module="freeze", output=target,
                              inputs={MOUNT_RUN: options.run.resolve()},
                              arguments=("--run", MOUNT_RUN, *variant.freeze_args), memory=options.memory,
                              prefix=options.prefix, run_id=options.run_id, timeout_s=VARIANT_TIMEOUT_S)
        else:
            image = images[str(variant.reexport_env)]
            source = made[variant.source]
            if isinstance(source, str):
                made[name] = f"its source variant {variant.source} is not applicable: {source}"
                continue
            key = {"kind": "reexport", "image": image_identity(image.info.labels, image.info.id),
                   "strip": variant.strip_default_attrs, "model": tree_fingerprint(source)}
            arguments = ("--model", MOUNT_MODEL) + (("--strip-default-attrs",) if variant.strip_default_attrs else ())
            step = StepConfig(name="reexport", role="infer", module="reexport", output=target,
                              inputs={MOUNT_MODEL: source}, arguments=arguments, memory=options.memory,
                              prefix=options.prefix, run_id=options.run_id, timeout_s=VARIANT_TIMEOUT_S)
        ran = produce(target, key, lambda step=step, image=image: run_step(engine, project, step, image))
        log.info("variant %s: %s", name, f"{step.name} in {image.tag}" if ran else "up to date")
        made[name] = target
    return made


def lock_drift(project: Project, env: EnvSpec) -> list[str]:
    """Packages the environment's lock pins at another version than the training lock."""
    if env.lock_name == TRAINING_LOCK:
        return []
    training = check_all(project, [TRAINING_LOCK])[TRAINING_LOCK]
    other = check_fresh(project, env.lock_spec) if env.lock_spec else check_all(project, [env.lock_name])[env.lock_name]
    return disagreements(training, other)


REFERENCE_ENV = "reference"


def with_model_environment(matrix: Matrix, model: Path) -> Matrix:
    """An adopted model whose golden came from the user's own environment brings that environment's
    lock: it joins the matrix as the environment 'reference', with a case that must reproduce the
    golden there (bit-exact with the same numerics)."""
    from ..environments.requirements import LOCK_NAME, SOURCE_NAME, UserEnvironment, base_for_python

    try:
        manifest = json.loads((model / MANIFEST_FILE).read_text())
        environment = (manifest.get("adopted") or {}).get("environment") or {}
        files = environment.get("files") or {}
    except (OSError, ValueError, AttributeError):
        return matrix
    if LOCK_NAME not in files or SOURCE_NAME not in files:
        return matrix
    python = ".".join(str(environment.get("python", "")).split(".")[:2])
    # The name it was adopted under: the same lock, file name and name give the same image, reused.
    name = str(environment.get("name") or REFERENCE_ENV)
    if name in matrix.envs:
        name = f"{name}-{REFERENCE_ENV}"
    user = UserEnvironment(name=name, directory=(model / files[LOCK_NAME]).resolve().parent, python=python,
                           base=base_for_python(python).name)
    env = EnvSpec(name=name, description="the environment the adopted model's golden was computed in "
                  f"(its own requirements: TensorFlow {environment.get('tensorflow')}, Python {python})",
                  lock_spec=user.lock_spec())
    case = CaseSpec(name="reference-env", env=name, variant=DEFAULT_VARIANT, expect=EXPECT_AS_REFERENCE,
                    scenario="reference", description="the golden reproduced where it was made")
    return matrix.with_environment(env, case)


def model_mount(variant: str) -> str:
    return f"{MOUNT_MODELS}/{variant}"


def probe_arguments(case: CaseSpec) -> tuple[str, ...]:
    settings = case.settings
    arguments = ["--model", model_mount(case.variant)]
    if settings.load_op_libraries:
        arguments.append(FLAG_LOAD_OP_LIBRARIES)
    if settings.allow_soft_placement:
        arguments.append(FLAG_ALLOW_SOFT_PLACEMENT)
    if settings.intra_op_threads:
        arguments += ["--intra-op-threads", str(settings.intra_op_threads)]
    if settings.inter_op_threads:
        arguments += ["--inter-op-threads", str(settings.inter_op_threads)]
    for item in settings.preprocessing:
        arguments += ["--preprocessing", item]
    if settings.runtime != RUNTIME_TENSORFLOW:
        arguments += [FLAG_RUNTIME, settings.runtime]
    if settings.precision != PRECISION_FP32:
        arguments += [FLAG_PRECISION, settings.precision]
    if settings.precision == PRECISION_BF16:
        arguments += [FLAG_BF16_TOLERANCE, str(settings.bf16_tolerance)]
    return tuple(arguments)


def group_cases(cases, isolate: bool = False) -> list[list[CaseSpec]]:
    """Cases that share one container (CaseSpec.container_key); each alone with isolate."""
    groups: dict[tuple, list[CaseSpec]] = {}
    for case in cases:
        groups.setdefault((case.name,) if isolate else case.container_key, []).append(case)
    return list(groups.values())


def reference_numerics(model: Path) -> dict | None:
    try:
        return json.loads((model / MANIFEST_FILE).read_text())["golden"].get("numerics")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def judge(case: CaseSpec, outcome: str | None, finding_codes: set[str], differences: list[str] | None,
          precision_effective: str | None = None, override_unchanged: bool = False) -> tuple[str, bool, list[str]]:
    """(resolved expectation, ok, reasons): the outcome must match and every expected finding be there.
    A preprocessing override this model's spec already has changes nothing: the case is as-reference."""
    expect = EXPECT_AS_REFERENCE if override_unchanged and case.settings.preprocessing else case.expect
    resolved = resolve_expectation(expect, differences, precision_effective)
    reasons = []
    if not outcome_matches(resolved, outcome):
        if case.expect == EXPECT_AS_PRECISION:
            why = f" (the runtime computed in {precision_effective or 'an unknown precision'})"
        elif resolved != expect:
            why = f" ({'same numerics' if differences == [] else 'numerics differ: ' + '; '.join(differences or ['unknown'])})"
        else:
            why = ""
        reasons.append(f"expected {resolved}{why}, got {outcome}")
    missing = [code for code in required_findings(case, precision_effective) if code not in finding_codes]
    if missing:
        reasons.append(f"expected findings {missing} are missing")
    return resolved, not reasons, reasons


def lock_findings(env: EnvSpec, drift: list[str]) -> list[dict]:
    if not (env.must_match_training_lock and drift):
        return []
    return [{"code": Code.LOCK_DRIFT, "severity": SEVERITY_WARNING, "stage": "environment",
             "cause": f"{len(drift)} pins shared with requirements.lock differ: " + "; ".join(drift),
             "fix": f"constrain {env.image_spec().locked.source} with '-c requirements.lock' and run 'make lock'"}]


def conversions(options: DriftOptions) -> Path:
    """Where the probes keep their ONNX conversions between runs (one per graph, converter and image):
    beside the report, writable by the containers' user."""
    directory = (options.out / "conversions").resolve()
    directory.mkdir(parents=True, exist_ok=True)
    hand_to_container_user(directory)
    return directory


def run_group(engine: Engine, project: Project, group: list[CaseSpec], env: EnvSpec, image: BuiltImage,
              models: dict[str, Path | str], options: DriftOptions) -> list[CaseResult]:
    """The group's cases in one container (one TensorFlow import); not-applicable ones need none."""
    common = lambda case: dict(case=case, env=env, image=image.tag, image_labels=image.info.labels,  # noqa: E731
                               expected=case.expect)
    results = [CaseResult(**common(case), resolved=case.expect, outcome=OUTCOME_NOT_APPLICABLE, ok=True, probe=None,
                          lock_drift=[], seconds=0.0, reasons=[f"not applicable: variant {case.variant}: "
                                                               f"{models[case.variant]}"])
               for case in group if isinstance(models[case.variant], str)]
    runnable = [case for case in group if not isinstance(models[case.variant], str)]
    if not runnable:
        return results
    started = time.perf_counter()
    drift = lock_drift(project, env)
    first = runnable[0]
    kept = conversions(options) if first.settings.runtime == RUNTIME_ONNXRUNTIME else None
    plan = [{"name": case.name, "args": [*probe_arguments(case),
                                         *((FLAG_CONVERSION_CACHE, MOUNT_CONVERSIONS) if kept else ())]}
            for case in runnable]
    run = ModuleRun(image=Image.of(image), module="probe", arguments=("--plan", json.dumps(plan)),
                    output=Mount(kept, MOUNT_CONVERSIONS, False) if kept else None,
                    what=f"drift case{'s' if len(runnable) > 1 else ''} {', '.join(case.name for case in runnable)}",
                    inputs={model_mount(case.variant): models[case.variant] for case in runnable},
                    environment=dict(first.settings.environment),
                    memory=memory_for(first.settings.runtime, options.memory),
                    timeout_s=CASE_TIMEOUT_S * len(runnable), gpus=env.device == "cuda" and engine.gpu_runtime(),
                    run_id=options.run_id, name=f"{options.run_id}-drift-{first.name}"[:120])
    probes, error, container_s = {}, None, None
    try:
        result = run_module(engine, run)
        container_s = result.seconds
        probes = {name: report.to_dict()
                  for name, report in ProbeReport.many_from_json(result.stdout.strip().splitlines()[-1]).items()}
    except (ValueError, IndexError):
        error = "the probe printed no whole report"
    except ColdchainError as failure:
        error = failure.message
    seconds = time.perf_counter() - started
    # Docker's create/start/wait/remove and the interpreter's start: what sharing a container saves.
    inside = sum(float(probe.get("seconds") or 0.0) for probe in probes.values())
    overhead = max(0.0, container_s - inside) / len(runnable) if container_s is not None and probes else None
    for case in runnable:
        probe = probes.get(case.name)
        findings = lock_findings(env, drift)
        outcome = probe.get("outcome") if probe else "error"
        codes = {item["code"] for item in findings} | \
            {item["code"] for item in ((probe or {}).get("diagnosis") or {}).get("findings", [])}
        reference = reference_numerics(models[case.variant])
        differences = numerics_differences(reference, (probe or {}).get("numerics"))
        resolved, ok, reasons = judge(case, outcome, codes, differences,
                                      ((probe or {}).get("runtime") or {}).get("precision_effective"),
                                      bool(((probe or {}).get("preprocessing") or {}).get("override_unchanged")))
        if not ok and error:
            reasons.append(error)
        elif not ok and probe and (probe.get("diagnosis") or {}).get("findings"):
            first_finding = probe["diagnosis"]["findings"][0]
            reasons.append(f"{first_finding['code']}: {first_finding['cause']}")
        results.append(CaseResult(**common(case), resolved=resolved, outcome=outcome, ok=ok, probe=probe,
                                  lock_drift=drift, seconds=seconds / len(runnable), error=error, reasons=reasons,
                                  findings=findings, reference_numerics=reference,
                                  numerics_differences=differences, container_s=container_s,
                                  shared_with=len(runnable), overhead_s=overhead))
    return results


def run_cases(engine: Engine, project: Project, matrix: Matrix, options: DriftOptions,
              images: dict[str, BuiltImage], models: dict[str, Path | str]) -> list[CaseResult]:
    results: list[CaseResult] = []
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, options.jobs))
    futures = [pool.submit(run_group, engine, project, group, matrix.envs[group[0].env], images[group[0].env], models,
                           options) for group in group_cases(matrix.cases, options.isolate)]
    try:
        for future in concurrent.futures.as_completed(futures):
            for result in future.result():
                log.info("%-28s %-24s expected %-24s got %-24s %s", result.case.name, result.case.env,
                         result.resolved, result.outcome, "ok" if result.ok else "UNEXPECTED")
                results.append(result)
    except BaseException:
        # Ctrl-C (or a crash): stop what is queued and kill what runs now, instead of waiting for it.
        for future in futures:
            future.cancel()
        engine.remove_containers(f"{RUN_LABEL}={options.run_id}")
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    order = {case.name: index for index, case in enumerate(matrix.cases)}
    return sorted(results, key=lambda r: order[r.case.name])


def run_drift_test(engine: Engine, project: Project, matrix: Matrix, options: DriftOptions) -> dict:
    started = time.perf_counter()
    matrix = with_model_environment(matrix, options.model)
    whole = matrix
    if options.shard is not None:
        mine = assign(matrix, options.shard.total, measured_costs(options.costs))[options.shard.index]
        matrix = Matrix(matrix.path, matrix.reference_env, matrix.envs, matrix.variants, tuple(mine))
        log.info("shard %s: %d of %d cases: %s", options.shard, len(mine), len(whole.cases),
                 ", ".join(case.name for case in mine) or "none")
    env_names, variant_names = needed(matrix)
    phases = {}
    mark = time.perf_counter()
    images = build_environments(engine, project, matrix, options, env_names)
    phases["environments_s"] = round(time.perf_counter() - mark, 1)
    mark = time.perf_counter()
    models = make_variants(engine, project, matrix, options, variant_names, images)
    phases["variants_s"] = round(time.perf_counter() - mark, 1)
    mark = time.perf_counter()
    results = run_cases(engine, project, matrix, options, images, models)
    phases["cases_s"] = round(time.perf_counter() - mark, 1)
    report = assemble_report(project, matrix, options, images, models, [result.to_json() for result in results],
                             env_names, {**phases, "total_s": round(time.perf_counter() - started, 1),
                                         "jobs": max(1, options.jobs)})
    report["matrix_cases"] = [case.name for case in whole.cases]
    if options.shard is not None:
        report["shard"] = {"index": options.shard.index, "total": options.shard.total,
                           "cases": [case.name for case in matrix.cases]}
    return report


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
        return json.loads((model / MANIFEST_FILE).read_text())["model"]["sha256"]
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


def default_jobs() -> int:
    """One TF process already uses every core for a batch; run two at once only with four or more."""
    return max(1, (os.cpu_count() or 1) // 2) if (os.cpu_count() or 1) >= 4 else 1


def render_heatmap(engine: Engine, project: Project, report_json: Path, options: DriftOptions) -> Path:
    """The heatmap PNG, drawn in the inference image (Pillow lives there, the host needs none)."""
    image = ensure_image(engine, project, IMAGES["infer-cpu"], BuildOptions(prefix=options.prefix))
    target = report_json.with_name(REPORT_HEATMAP)
    step = StepConfig(name="heatmap", role="infer", module="heatmap", output=target.resolve(),
                      inputs={MOUNT_REPORT: report_json.parent.resolve()},
                      arguments=("--report", f"{MOUNT_REPORT}/{report_json.name}"), memory="1g",
                      prefix=options.prefix, run_id=options.run_id, output_is_file=True)
    run_step(engine, project, step, image)
    return target
