"""The drift test's environments and model variants: every environment image the selected cases
need (each from its own lock), the variants made from the model (re-freezes in the training or
op-build image, re-exports in a matrix environment), and an adopted model's own environment, which
joins the matrix."""

from __future__ import annotations

import logging
from pathlib import Path

from ..cache import image_identity, produce, tree_fingerprint
from ..config import IMAGES, Project
from ..confine import confined_file, read_manifest
from ..contract import (EXPECT_AS_REFERENCE, FLAG_MODEL, FLAG_STRIP_DEFAULT_ATTRS, MOUNT_MODEL,
                        RUN_CONFIG_FILE)
from ..engine import Engine
from ..environments.images import BuildOptions, BuiltImage, ensure_image
from ..environments.matrix import (DEFAULT_VARIANT, FREEZE_IMAGE, OP_BUILD_ENV, CaseSpec, EnvSpec, Matrix, VariantSpec,
                                   freeze_images)
from ..environments.opbuild import build_opbuild_image
from ..steps.model_argument import model_directory
from ..steps.pipeline import StepConfig, freeze_step, run_step
from .options import DriftOptions

log = logging.getLogger(__name__)
VARIANT_TIMEOUT_S = 1800.0
REFERENCE_ENV = "reference"
NO_TRAINING_RUN = ("it re-freezes the kit's training run, and this model has none (an adopted model); pass --run DIR "
                   "to make it from a training run")


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


def freeze_image(engine: Engine, project: Project, freeze_in: str, options: BuildOptions,
                 built: dict[str, BuiltImage]) -> BuiltImage:
    """The image a freeze variant made `in` this build environment runs in: the training image, or the
    custom-op build image made from it. Each is built once: `built` keeps them by name."""
    for name in freeze_images(freeze_in):
        if name not in built:
            built[name] = (build_opbuild_image(engine, project, built[FREEZE_IMAGE], options) if name == OP_BUILD_ENV
                           else ensure_image(engine, project, IMAGES[name], options))
    return built[name]


def make_variants(engine: Engine, project: Project, matrix: Matrix, options: DriftOptions,
                  names: set[str], images: dict[str, BuiltImage]) -> dict[str, Path | str]:
    """Model directory per variant, made only when its inputs changed since the last run; a variant
    that needs a training run this model does not have is the reason it is not applicable."""
    made: dict[str, Path | str] = {DEFAULT_VARIANT: model_directory(options.model)}
    has_run = options.run is not None and (options.run / RUN_CONFIG_FILE).is_file()
    run_fingerprint = None
    kit: dict[str, BuiltImage] = {}  # the training and op-build images, once each
    wanted = set(names) | {matrix.variants[name].source for name in names if matrix.variants[name].reexport_env}
    # Freezes first: a re-export may start from one of them.
    for name in sorted(wanted - {DEFAULT_VARIANT}, key=lambda n: (matrix.variants[n].kind == "reexport", n)):
        variant = matrix.variants[name]
        target = (options.out / "models" / name).resolve()
        if variant.needs_training_run(matrix.variants) and not has_run:
            made[name] = NO_TRAINING_RUN
            continue
        if variant.kind == "freeze":
            image = freeze_image(engine, project, variant.freeze_in, BuildOptions(prefix=options.prefix), kit)
            run_fingerprint = run_fingerprint or tree_fingerprint(options.run)
            key = {"kind": "freeze", "image": image_identity(image.info.labels, image.info.id),
                   "args": list(variant.freeze_args), "run": run_fingerprint}
            step = freeze_step(options.run.resolve(), target, variant.freeze_args, memory=options.memory,
                               prefix=options.prefix, run_id=options.run_id, timeout_s=VARIANT_TIMEOUT_S)
        else:
            image, source = images[str(variant.reexport_env)], made[variant.source]
            if isinstance(source, str):
                made[name] = f"its source variant {variant.source} is not applicable: {source}"
                continue
            key = {"kind": "reexport", "image": image_identity(image.info.labels, image.info.id),
                   "strip": variant.strip_default_attrs, "model": tree_fingerprint(source)}
            step = reexport_step(variant, source, target, options)
        ran = produce(target, key, lambda step=step, image=image: run_step(engine, project, step, image))
        log.info("variant %s: %s", name, f"{step.name} in {image.tag}" if ran else "up to date")
        made[name] = target
    return made


def reexport_step(variant: VariantSpec, source: Path, target: Path, options: DriftOptions) -> StepConfig:
    arguments = (FLAG_MODEL, MOUNT_MODEL) + ((FLAG_STRIP_DEFAULT_ATTRS,) if variant.strip_default_attrs else ())
    return StepConfig(name="reexport", role="infer", module="reexport", output=target, inputs={MOUNT_MODEL: source},
                      arguments=arguments, memory=options.memory, prefix=options.prefix, run_id=options.run_id,
                      timeout_s=VARIANT_TIMEOUT_S,
                      # Made from the signed directory itself: the container re-hashes what it reads of it.
                      environment=dict(options.signed_environment) if variant.source == DEFAULT_VARIANT else {})


def with_model_environment(matrix: Matrix, model: Path) -> Matrix:
    """An adopted model whose golden came from the user's own environment brings that environment's
    lock: it joins the matrix as the environment 'reference', with a case that must reproduce the
    golden there (bit-exact with the same numerics)."""
    from ..environments.requirements import LOCK_NAME, SOURCE_NAME, UserEnvironment, base_for_python

    try:
        manifest = read_manifest(model)  # bounded, and refused where it is no regular file
        environment = (manifest.get("adopted") or {}).get("environment") or {}
        files = environment.get("files") or {}
    except AttributeError:
        return matrix
    if LOCK_NAME not in files or SOURCE_NAME not in files:
        return matrix
    lock = confined_file(model, files[LOCK_NAME], f"adopted.environment.files.{LOCK_NAME}")
    python = ".".join(str(environment.get("python", "")).split(".")[:2])
    # The name it was adopted under: the same lock, file name and name give the same image, reused.
    name = str(environment.get("name") or REFERENCE_ENV)
    if name in matrix.envs:
        name = f"{name}-{REFERENCE_ENV}"
    user = UserEnvironment(name=name, directory=lock.resolve().parent, python=python,
                           base=base_for_python(python).name)
    env = EnvSpec(name=name, description="the environment the adopted model's golden was computed in "
                  f"(its own requirements: TensorFlow {environment.get('tensorflow')}, Python {python})",
                  lock_spec=user.lock_spec())
    case = CaseSpec(name="reference-env", env=name, variant=DEFAULT_VARIANT, expect=EXPECT_AS_REFERENCE,
                    scenario="reference", description="the golden reproduced where it was made")
    return matrix.with_environment(env, case)
