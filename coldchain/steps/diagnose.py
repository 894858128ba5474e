"""`coldchain doctor` on the host: run the container side's doctor in the runtime being asked about
(the inference image, a drift-matrix environment, or any image), the model mounted read-only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import IMAGES, Project
from ..contract import (FLAG_ALLOW_SOFT_PLACEMENT, FLAG_JSON, FLAG_LOAD_OP_LIBRARIES, FLAG_MANIFEST, FLAG_NO_RUN,
                        MOUNT_MANIFEST, MOUNT_MODEL, Exit, allow_op_arguments)
from ..engine import Engine
from ..environments.images import BuildOptions, ensure_image
from ..environments.matrix import environment_image_spec
from ..errors import UsageError
from .model_argument import EITHER, resolve_model
from . import signing
from .runner import Image, ModuleRun, failure, run_module, spec_for

DOCTOR_TIMEOUT_S = 900.0
DOCTOR_EXITS = (Exit.OK, Exit.MODEL_BLOCKED)


@dataclass(frozen=True)
class DoctorRequest:
    model: Path
    manifest: Path | None = None
    env_name: str | None = None
    image_tag: str | None = None
    matrix_path: Path = Path("drift/matrix.toml")
    prefix: str = "coldchain"
    load_op_libraries: bool = False
    allow_soft_placement: bool = False
    run: bool = True
    as_json: bool = False
    allowed_ops: tuple[str, ...] = ()  # --allow-op
    trust: tuple[Path, ...] = ()  # public keys or certificates model.sig must verify against (--trust)


def image_for(engine: Engine, project: Project, request: DoctorRequest) -> Image:
    if request.env_name and request.image_tag:
        raise UsageError("pass either --env or --image, not both", fix="--env names a drift-matrix environment")
    if request.image_tag:
        info = engine.inspect_image(request.image_tag)
        if info is None:
            raise UsageError(f"image {request.image_tag} does not exist locally", fix="build or pull it first, or use --env")
        return Image(info.id, request.image_tag, dict(info.labels))
    spec = IMAGES["infer-cpu"]
    if request.env_name:
        spec = environment_image_spec(project, request.matrix_path, request.env_name, "--env")
    return Image.of(ensure_image(engine, project, spec, BuildOptions(prefix=request.prefix)))


def run_doctor(engine: Engine, project: Project, request: DoctorRequest) -> tuple[int, str]:
    """(exit code, the doctor's report): 0 loadable, 3 blocking; anything else raises."""
    found = resolve_model(request.model, EITHER)
    signed = signing.verify_if_trusted(found.directory, request.trust)
    inputs = {MOUNT_MODEL: found.directory}
    arguments = [found.target]
    if request.manifest is not None:
        manifest = request.manifest.resolve()
        if not manifest.is_file():
            raise UsageError(f"{manifest}: manifest not found", fix="pass the manifest.json written by freeze or adopt")
        inputs[MOUNT_MANIFEST] = manifest.parent
        arguments += [FLAG_MANIFEST, f"{MOUNT_MANIFEST}/{manifest.name}"]
    if request.load_op_libraries:
        arguments.append(FLAG_LOAD_OP_LIBRARIES)
    if request.allow_soft_placement:
        arguments.append(FLAG_ALLOW_SOFT_PLACEMENT)
    if not request.run:
        arguments.append(FLAG_NO_RUN)
    arguments += allow_op_arguments(request.allowed_ops)
    if request.as_json:
        arguments.append(FLAG_JSON)
    image = image_for(engine, project, request)
    run = ModuleRun(image=image, module="doctor", arguments=tuple(arguments), what="doctor", inputs=inputs,
                    timeout_s=DOCTOR_TIMEOUT_S, environment=signing.container_environment(signed))
    result = run_module(engine, run, check=False)
    if result.exit_code not in DOCTOR_EXITS:
        raise failure(run, spec_for(run), result)
    report = result.stdout.rstrip()
    if request.as_json:
        return result.exit_code, signing.with_signature(report, signed)
    return result.exit_code, f"{report}\nsignature: {signing.signature_status(signed)}"
