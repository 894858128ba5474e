"""The drift matrix (drift/matrix.toml) parsed: environments, model variants and the cases that pair
them, each with its expected outcome and findings, as frozen dataclasses; every mistake is reported
with the file, the entry and the nearest valid value. Below steps/ and drift/, which both read it
(doctor --env, adopt --reference-env, the drift test); what an expectation means is drift/judging.py's."""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import BASES, IMAGES, LOCKS, ImageSpec, LockSpec, Project
from ..contract import (CONVERTED_RUNTIMES, DEFAULT_BF16_TOLERANCE, EMULATED_CPUS, EXPECT_AS_PRECISION, EXPECT_AS_REFERENCE,
                        FAILURE_CLASSES, OUTCOMES, PRECISION_FP32, PRECISION_INT8, PRECISION_RUNTIME_DEFAULT, PRECISIONS,
                        PROBE_RUNTIMES, RUNTIME_ONNXRUNTIME, RUNTIME_TENSORFLOW, RUNTIME_TFLITE, TFLITE_PRECISIONS,
                        WARNING_CODES, per_run_target)
from ..errors import UsageError

SCHEMA_VERSION = 1
EXPECTATIONS = OUTCOMES + (EXPECT_AS_REFERENCE, EXPECT_AS_PRECISION)
FINDING_CODES = FAILURE_CLASSES + WARNING_CODES
DEFAULT_VARIANT = "default"
OP_BUILD_ENV = "opbuild"  # freeze variants marked `in = "opbuild"` run in the custom-op build image
FREEZE_IMAGE = "train-cpu"  # the others in the training image, which the op-build image is made from


@dataclass(frozen=True)
class EnvSpec:
    name: str
    description: str
    image: str | None = None  # a kit image (config.IMAGES), or
    lock: str | None = None  # a lock (config.LOCKS) to build an inference image from
    device: str = "cpu"
    must_match_training_lock: bool = False  # shared pins must equal requirements.lock's
    lock_spec: LockSpec | None = None  # a lock outside LOCKS: an adopted model's reference environment

    @property
    def lock_name(self) -> str:
        if self.lock_spec is not None:
            return self.lock_spec.name
        return IMAGES[self.image].lock if self.image else str(self.lock)

    def image_spec(self) -> ImageSpec:
        """A kit image, or an image built from the environment's own lock (the reference environment
        of an adopted model with the training Dockerfile: it may hold tf-slim)."""
        if self.image:
            return IMAGES[self.image]
        if self.lock_spec is not None:
            return ImageSpec("reference", self.device, self.lock_spec.name, self.lock_spec.base, env=self.name,
                             dockerfile_name="Dockerfile.train", lock_spec=self.lock_spec)
        return ImageSpec("infer", self.device, str(self.lock), LOCKS[str(self.lock)].base, env=self.name)


@dataclass(frozen=True)
class VariantSpec:
    name: str
    description: str
    freeze_args: tuple[str, ...] = ()
    freeze_in: str = "train"  # "train" (the training image) or "opbuild"
    reexport_env: str | None = None  # re-export a model in this environment
    source: str = "default"  # the variant a re-export starts from
    strip_default_attrs: bool = False

    @property
    def kind(self) -> str:
        if self.name == DEFAULT_VARIANT:
            return "given"
        return "reexport" if self.reexport_env else "freeze"

    def needs_training_run(self, variants: dict) -> bool:
        """Freeze variants re-freeze the kit's training run; an adopted model has none."""
        if self.kind == "freeze":
            return True
        return self.kind == "reexport" and variants[self.source].needs_training_run(variants)


@dataclass(frozen=True)
class Settings:
    environment: tuple[tuple[str, str], ...] = ()
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    allow_soft_placement: bool = False
    load_op_libraries: bool = False
    preprocessing: tuple[str, ...] = ()
    runtime: str = RUNTIME_TENSORFLOW
    precision: str = PRECISION_FP32
    bf16_tolerance: float = DEFAULT_BF16_TOLERANCE
    xnnpack: bool = True  # tflite: LiteRT's default delegate on, or its builtin kernels alone
    # Run as this x86-64 CPU model under qemu (contract.EMULATED_CPUS): another CPU class's kernels here.
    emulate_cpu: str | None = None

    @property
    def per_run_target(self) -> str | None:
        """The artefact the case runs that is converted once per drift run (TFLite's, the int8 ones),
        None where the probe converts the graph itself."""
        return per_run_target(self.runtime, self.precision)


@dataclass(frozen=True)
class CaseSpec:
    name: str
    env: str
    variant: str
    expect: str
    description: str = ""
    settings: Settings = field(default_factory=Settings)
    scenario: str = ""  # which drift scenario the case demonstrates, for the report
    expect_findings: tuple[str, ...] = ()  # finding codes the case's diagnosis must include (warnings too)

    @property
    def container_key(self) -> tuple:
        """Cases with the same key can share one probe container: the same environment and environment
        variables (TensorFlow reads them once, when it loads). A case that loads an op library runs
        alone: the ops it registers would stay registered for the next case in the process. So does an
        ONNX Runtime case that converts in the probe: tf2onnx needs a container of its own size (steps/convert.py)."""
        alone = self.settings.load_op_libraries or (self.settings.runtime == RUNTIME_ONNXRUNTIME
                                                    and self.settings.per_run_target is None)
        return (self.env, self.settings.environment, self.settings.emulate_cpu or "", self.name if alone else "")


@dataclass(frozen=True)
class Matrix:
    path: Path
    reference_env: str
    envs: dict[str, EnvSpec]
    variants: dict[str, VariantSpec]
    cases: tuple[CaseSpec, ...]

    def select(self, names: tuple[str, ...]) -> "Matrix":
        if not names:
            return self
        for name in names:
            known(self.path, "case", name, [case.name for case in self.cases])
        return Matrix(self.path, self.reference_env, self.envs, self.variants,
                      tuple(case for case in self.cases if case.name in names))

    def image_spec(self, env: str, where: str = "") -> ImageSpec:
        """The image of environment `env` (a mistyped name is refused with the nearest one; `where`
        says which option named it)."""
        return self.envs[known(self.path, "environment", env, self.envs, where)].image_spec()

    def with_environment(self, env: EnvSpec, case: CaseSpec) -> "Matrix":
        """The matrix plus one environment and its case (an adopted model's own reference environment)."""
        return Matrix(self.path, self.reference_env, {**self.envs, env.name: env}, self.variants, (case,) + self.cases)


def freeze_images(freeze_in: str) -> tuple[str, ...]:
    """The images a freeze variant made `in` this build environment needs, in build order: the
    training image, and the custom-op build image made from it."""
    return (FREEZE_IMAGE, OP_BUILD_ENV) if freeze_in == OP_BUILD_ENV else (FREEZE_IMAGE,)


def known(path: Path, what: str, value: str, valid, where: str = "") -> str:
    valid = list(valid)
    if value in valid:
        return value
    close = difflib.get_close_matches(value, valid, n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'?" if close else f"valid: {', '.join(sorted(valid))}"
    raise UsageError(f"{path}: unknown {what} '{value}'{where}", fix=hint)


def _table(path: Path, data: Any, where: str) -> dict:
    if not isinstance(data, dict):
        raise UsageError(f"{path}: {where} must be a table", fix="see the comments at the top of the matrix file")
    return data


def _check_keys(path: Path, data: dict, allowed: tuple[str, ...], where: str) -> None:
    for key in data:
        known(path, "key", key, allowed, f" in {where}")


def load_matrix(path: Path) -> Matrix:
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: drift matrix not found", fix="pass --matrix drift/matrix.toml") from None
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"{path}: not valid TOML ({error})", fix="fix the syntax at the position given") from None
    _check_keys(path, raw, ("schema", "reference_env", "envs", "variants", "cases"), "the top level")
    if raw.get("schema") != SCHEMA_VERSION:
        raise UsageError(f"{path}: schema {raw.get('schema')!r} is not {SCHEMA_VERSION}",
                         fix=f"set schema = {SCHEMA_VERSION} (the format this coldchain reads)")
    envs = {name: _env(path, name, _table(path, value, f"[envs.{name}]"))
            for name, value in _table(path, raw.get("envs", {}), "[envs]").items()}
    if not envs:
        raise UsageError(f"{path}: no environments", fix="declare at least one [envs.NAME]")
    variants = {DEFAULT_VARIANT: VariantSpec(DEFAULT_VARIANT, "the model given to drift-test (make freeze)")}
    for name, value in _table(path, raw.get("variants", {}), "[variants]").items():
        variants[name] = _variant(path, name, _table(path, value, f"[variants.{name}]"), envs)
    for variant in variants.values():
        if variant.reexport_env:
            source = known(path, "variant", variant.source, variants, f" (source of [variants.{variant.name}])")
            if variants[source].reexport_env:
                raise UsageError(f"{path}: [variants.{variant.name}] re-exports {source}, itself a re-export",
                                 fix="re-export the default model or a freeze variant")
    reference = known(path, "environment", str(raw.get("reference_env", "")), envs, " (reference_env)")
    cases_raw = raw.get("cases", [])
    if not isinstance(cases_raw, list) or not cases_raw:
        raise UsageError(f"{path}: no cases", fix="add [[cases]] entries pairing an env with a variant")
    cases = tuple(_case(path, index, _table(path, value, f"[[cases]] #{index + 1}"), envs, variants)
                  for index, value in enumerate(cases_raw))
    names = [case.name for case in cases]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise UsageError(f"{path}: case names repeat: {', '.join(duplicates)}", fix="give every case its own name")
    return Matrix(path, reference, envs, variants, cases)


def matrix_file(project: Project, path: Path) -> Path:
    """A --matrix path as given: absolute, or relative to the project root."""
    return path if path.is_absolute() else project.root / path


def environment_image_spec(project: Project, matrix_path: Path, env: str, option: str) -> ImageSpec:
    """The image of the drift matrix's environment `env`, named on the command line by `option`
    (doctor --env, adopt --reference-env, reexport --with): the one way a matrix environment
    becomes an image spec."""
    return load_matrix(matrix_file(project, matrix_path)).image_spec(env, f" ({option})")


def _env(path: Path, name: str, data: dict) -> EnvSpec:
    where = f"[envs.{name}]"
    _check_keys(path, data, ("description", "image", "lock", "device", "must_match_training_lock"), where)
    image, lock = data.get("image"), data.get("lock")
    if bool(image) == bool(lock):
        raise UsageError(f"{path}: {where} needs exactly one of image = (a kit image) or lock = (a lock to build from)",
                         fix=f"kit images: {', '.join(sorted(IMAGES))}; drift locks: "
                             f"{', '.join(sorted(n for n in LOCKS if n.startswith('drift-')))}")
    if image:
        known(path, "image", image, IMAGES, f" in {where}")
    if lock:
        known(path, "lock", lock, LOCKS, f" in {where}")
    device = data.get("device", IMAGES[image].device if image else "cpu")
    known(path, "device", device, ("cpu", "cuda"), f" in {where}")
    return EnvSpec(name=name, description=str(data.get("description", "")), image=image, lock=lock, device=device,
                   must_match_training_lock=bool(data.get("must_match_training_lock", bool(image))))


def _variant(path: Path, name: str, data: dict, envs: dict) -> VariantSpec:
    where = f"[variants.{name}]"
    if name == DEFAULT_VARIANT:
        raise UsageError(f"{path}: {where}: '{DEFAULT_VARIANT}' is the model given to drift-test",
                         fix="name the variant differently")
    _check_keys(path, data, ("description", "freeze", "in", "reexport_in", "source", "strip_default_attrs"), where)
    freeze = data.get("freeze")
    reexport = data.get("reexport_in")
    if (freeze is None) == (reexport is None):
        raise UsageError(f"{path}: {where} needs exactly one of freeze = [args] or reexport_in = \"env\"",
                         fix="freeze variants re-freeze the run; reexport variants re-serialise the default model")
    if freeze is not None and not (isinstance(freeze, list) and all(isinstance(a, str) for a in freeze)):
        raise UsageError(f"{path}: {where} freeze must be a list of strings", fix='e.g. freeze = ["--training-mode"]')
    if reexport is not None:
        known(path, "environment", reexport, envs, f" in {where}")
    freeze_in = data.get("in", "train")
    known(path, "build environment", freeze_in, ("train", OP_BUILD_ENV), f" in {where}")
    source = str(data.get("source", DEFAULT_VARIANT))
    return VariantSpec(name=name, description=str(data.get("description", "")), freeze_args=tuple(freeze or ()),
                       freeze_in=freeze_in, reexport_env=reexport, source=source,
                       strip_default_attrs=bool(data.get("strip_default_attrs", False)))


def _case(path: Path, index: int, data: dict, envs: dict, variants: dict) -> CaseSpec:
    where = f"[[cases]] #{index + 1}" + (f" ({data['name']})" if "name" in data else "")
    _check_keys(path, data, ("name", "env", "variant", "expect", "expect_findings", "description", "scenario",
                             "environment", "intra_op_threads", "inter_op_threads", "allow_soft_placement",
                             "load_op_libraries", "preprocessing", "runtime", "precision", "bf16_tolerance",
                             "xnnpack", "emulate_cpu"), where)
    for key in ("name", "env", "expect"):
        if key not in data:
            raise UsageError(f"{path}: {where} has no {key}", fix=f"add {key} = ...")
    env = known(path, "environment", str(data["env"]), envs, f" in {where}")
    variant = known(path, "variant", str(data.get("variant", DEFAULT_VARIANT)), variants, f" in {where}")
    expect = known(path, "outcome", str(data["expect"]), EXPECTATIONS, f" (expect) in {where}")
    findings = data.get("expect_findings", [])
    if not isinstance(findings, list):
        raise UsageError(f"{path}: {where} expect_findings must be a list", fix='e.g. expect_findings = ["lock-drift"]')
    for code in findings:
        known(path, "finding code", str(code), FINDING_CODES, f" (expect_findings) in {where}")
    environment = data.get("environment", {})
    if not isinstance(environment, dict) or not all(isinstance(v, str) for v in environment.values()):
        raise UsageError(f"{path}: {where} environment must map names to strings",
                         fix='e.g. environment = { TF_ENABLE_ONEDNN_OPTS = "1" }')
    preprocessing = data.get("preprocessing", [])
    if not isinstance(preprocessing, list):
        raise UsageError(f"{path}: {where} preprocessing must be a list", fix='e.g. preprocessing = ["channel_order=BGR"]')
    runtime, precision = _runtime_and_precision(path, data, where)
    if expect == EXPECT_AS_PRECISION and precision != PRECISION_RUNTIME_DEFAULT:
        raise UsageError(f"{path}: {where} expects {EXPECT_AS_PRECISION} but declares precision {precision}",
                         fix=f'{EXPECT_AS_PRECISION} is for precision = "{PRECISION_RUNTIME_DEFAULT}" cases')
    tolerance = data.get("bf16_tolerance", DEFAULT_BF16_TOLERANCE)
    if not isinstance(tolerance, (int, float)) or not 0 < tolerance < 1:
        raise UsageError(f"{path}: {where} bf16_tolerance must be a number between 0 and 1",
                         fix=f"the fraction of each golden tensor's magnitude, e.g. {DEFAULT_BF16_TOLERANCE}")
    settings = Settings(environment=tuple(sorted(environment.items())),
                        intra_op_threads=int(data.get("intra_op_threads", 0)),
                        inter_op_threads=int(data.get("inter_op_threads", 0)),
                        allow_soft_placement=bool(data.get("allow_soft_placement", False)),
                        load_op_libraries=bool(data.get("load_op_libraries", False)),
                        preprocessing=tuple(str(item) for item in preprocessing), runtime=runtime,
                        precision=precision, bf16_tolerance=float(tolerance), xnnpack=_xnnpack(path, data, runtime, where),
                        emulate_cpu=_emulate_cpu(path, data, envs[env], where))
    return CaseSpec(name=str(data["name"]), env=env, variant=variant, expect=expect,
                    description=str(data.get("description", "")), settings=settings,
                    scenario=str(data.get("scenario", "")), expect_findings=tuple(str(code) for code in findings))


def _emulate_cpu(path: Path, data: dict, env: EnvSpec, where: str) -> str | None:
    if "emulate_cpu" not in data:
        return None
    cpu = known(path, "emulated CPU model", str(data["emulate_cpu"]), EMULATED_CPUS, f" (emulate_cpu) in {where}")
    base = BASES[env.image_spec().base]
    if base.machine != "x86_64":
        raise UsageError(f"{path}: {where}: emulate_cpu runs an x86-64 CPU model, and environment {env.name} is "
                         f"{base.platform}", fix="drop emulate_cpu, or use an x86-64 environment")
    return cpu


def _xnnpack(path: Path, data: dict, runtime: str, where: str) -> bool:
    value = data.get("xnnpack", True)
    if not isinstance(value, bool):
        raise UsageError(f"{path}: {where} xnnpack must be true or false", fix="e.g. xnnpack = false")
    if "xnnpack" in data and runtime != RUNTIME_TFLITE:
        raise UsageError(f"{path}: {where}: xnnpack is a {RUNTIME_TFLITE} setting, the case runs {runtime}",
                         fix=f'add runtime = "{RUNTIME_TFLITE}", or drop xnnpack')
    return value


def _runtime_and_precision(path: Path, data: dict, where: str) -> tuple[str, str]:
    runtime = known(path, "runtime", str(data.get("runtime", RUNTIME_TENSORFLOW)), PROBE_RUNTIMES, f" in {where}")
    if runtime == RUNTIME_TFLITE:
        # One artefact per precision, converted once per drift run; quantized ones judged by the model's bound.
        return runtime, known(path, "precision", str(data.get("precision", PRECISION_FP32)), TFLITE_PRECISIONS,
                              f" (a {RUNTIME_TFLITE} precision) in {where}")
    # OpenVINO and ONNX Runtime at int8: their post-training int8 artefact, converted once per drift run.
    int8 = (PRECISION_INT8,) if runtime in CONVERTED_RUNTIMES else ()
    precision = known(path, "precision", str(data.get("precision", PRECISION_FP32)),
                      PRECISIONS + (PRECISION_RUNTIME_DEFAULT,) + int8, f" in {where}")
    if runtime in (RUNTIME_TENSORFLOW, RUNTIME_ONNXRUNTIME) and precision not in (PRECISION_FP32,) + int8:
        raise UsageError(f"{path}: {where}: {runtime} runs the graph in fp32 only here, not {precision}",
                         fix='use runtime = "openvino" for bf16 or its default precision')
    return runtime, precision
