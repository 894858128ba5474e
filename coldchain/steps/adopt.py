"""`coldchain adopt` on the host: choose the reference environment (the user's own requirements,
resolved into a lock and built into an image like the kit's; an image; a drift-matrix environment; or
the kit's training image), then run the container side's adopt step in it, the graph, labels,
images and op libraries mounted read-only."""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..config import IMAGES, ImageSpec, Project
from ..confine import check_input
from ..contract import (FLAG_ENVIRONMENT, FLAG_ENVIRONMENT_NAME, FLAG_IMAGES, FLAG_LABELS, FLAG_MODEL, FLAG_OP_LIBRARY,
                        FLAG_REFERENCE, MOUNT_ENVIRONMENT, MOUNT_IMAGES, MOUNT_INPUTS, MOUNT_LABELS, MOUNT_MODEL)
from ..engine import Engine
from ..environments.images import BuildOptions, BuiltImage, build_image, ensure_image
from ..environments.matrix import environment_image_spec
from ..errors import UsageError
from ..fsutil import writing
from ..owner import Owner
from .model_argument import GRAPH, resolve_model
from .model_finish import model_finisher
from .pipeline import StepConfig, run_step

log = logging.getLogger(__name__)
ADOPT_TIMEOUT_S = 1800.0
REFERENCE_DOCKERFILE = "Dockerfile.train"  # the user's training environment may hold tf-slim; no --forbid


@dataclass(frozen=True)
class AdoptRequest:
    model: Path
    out: Path
    labels: Path | None = None
    images: Path | None = None
    op_libraries: tuple[Path, ...] = ()
    requirements: Path | None = None
    python: str | None = None
    environment_name: str = ""
    reference_image: str | None = None
    reference_env: str | None = None
    matrix_path: Path = Path("drift/matrix.toml")
    arguments: tuple[str, ...] = ()  # passed through to the container side (--preprocessing vgg, --input, ...)
    prefix: str = "coldchain"
    memory: str = "8g"
    timeout_s: float = ADOPT_TIMEOUT_S
    rebuild_environment: bool = False  # build the --requirements image even if one of the same inputs exists
    sign_key: Path | None = None  # sign the adopted directory (model.sig) with this EC private key


def reference_image_from_requirements(engine: Engine, project: Project, request: AdoptRequest, directory: Path
                                      ) -> tuple[BuiltImage, str]:
    """The user's requirements as a lock and an image, built like every kit image."""
    from ..environments.requirements import resolve

    name = request.environment_name or request.out.resolve().name
    environment = resolve(project, request.requirements, directory, name, request.python)
    spec = ImageSpec("reference", "cpu", environment.lock_spec().name, environment.base, env=name,
                     dockerfile_name=REFERENCE_DOCKERFILE, lock_spec=environment.lock_spec())
    built = build_image(engine, project, spec, BuildOptions(prefix=request.prefix, force=request.rebuild_environment))
    tensorflow = built.info.labels.get("io.coldchain.tensorflow.version") or "?"
    return built, (f"{request.requirements.name} resolved into a lock (TensorFlow {tensorflow}, Python "
                   f"{built.info.labels.get('io.coldchain.python.version')}) and built as {built.tag}")


def reference_image(engine: Engine, project: Project, request: AdoptRequest) -> tuple[object, str]:
    chosen = [flag for flag, value in (("--requirements", request.requirements), ("--reference-image",
              request.reference_image), ("--reference-env", request.reference_env)) if value]
    if len(chosen) > 1:
        raise UsageError(f"choose one reference environment, not {' and '.join(chosen)}",
                         fix="--requirements FILE (your environment), --reference-image TAG, or --reference-env NAME")
    if request.reference_image:
        from .runner import Image

        info = engine.inspect_image(request.reference_image)
        if info is None:
            raise UsageError(f"image {request.reference_image} does not exist locally", fix="build or load it first")
        return Image(info.id, request.reference_image, dict(info.labels)), f"image {request.reference_image}"
    if request.reference_env:
        spec = environment_image_spec(project, request.matrix_path, request.reference_env, "--reference-env")
        built = ensure_image(engine, project, spec, BuildOptions(prefix=request.prefix))
        return built, f"drift-matrix environment {request.reference_env} ({built.tag})"
    built = ensure_image(engine, project, IMAGES["train-cpu"], BuildOptions(prefix=request.prefix))
    return built, f"the kit's training image {built.tag}"


def adopt(engine: Engine, project: Project, request: AdoptRequest) -> Path:
    graph = resolve_model(request.model, GRAPH)
    inputs = {MOUNT_MODEL: graph.directory}
    arguments = [FLAG_MODEL, graph.target]
    for flag, path, mount in ((FLAG_LABELS, request.labels, MOUNT_LABELS), (FLAG_IMAGES, request.images, MOUNT_IMAGES)):
        if path is None:
            continue
        path = path.resolve()
        if not path.exists():
            raise UsageError(f"{path}: not found ({flag})", fix=f"pass an existing {flag[2:]} path")
        check_input(path, "labels" if flag == FLAG_LABELS else "image", flag)
        if flag == FLAG_LABELS:
            inputs[mount] = path.parent
            arguments += [flag, f"{mount}/{path.name}"]
        else:
            inputs[mount] = path
            arguments += [flag, mount]
    for index, library in enumerate(request.op_libraries):
        library = library.resolve()
        if not library.is_file():
            raise UsageError(f"{library}: op library not found", fix="pass the compiled .so the graph's custom ops need")
        inputs[f"{MOUNT_INPUTS}/{index}"] = library.parent
        arguments += [FLAG_OP_LIBRARY, f"{MOUNT_INPUTS}/{index}/{library.name}"]
    with writing(project.build_dir):
        project.build_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=project.build_dir, prefix=f"environment-{Owner.current().mark}-"))
    try:
        if request.requirements is not None:
            image, description = reference_image_from_requirements(engine, project, request, staging)
            staging.chmod(0o755)
            for path in staging.iterdir():
                path.chmod(0o644)
            inputs[MOUNT_ENVIRONMENT] = staging
            arguments += [FLAG_ENVIRONMENT, MOUNT_ENVIRONMENT, FLAG_ENVIRONMENT_NAME,
                          request.environment_name or request.out.resolve().name]
        else:
            image, description = reference_image(engine, project, request)
        log.info("adopt: reference environment: %s", description)
        # The SBOM of the reference environment's lock, where the kit knows it (not for any --reference-image).
        spec = getattr(image, "spec", None)
        lock = project.path(spec.locked.lock) if spec is not None else None
        step = StepConfig(name="adopt", role="reference", module="adopt", output=request.out.resolve(),
                          inputs=inputs, arguments=(*arguments, FLAG_REFERENCE, description, *request.arguments),
                          memory=request.memory, prefix=request.prefix, timeout_s=request.timeout_s,
                          finish=model_finisher(lock, request.sign_key))
        run_step(engine, project, step, image)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return request.out
