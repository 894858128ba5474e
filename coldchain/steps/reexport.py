"""`coldchain reexport` on the host: write a model out again with the standard fixes (device fields
cleared, default-valued attributes stripped) in the inference image or a drift-matrix environment,
the model mounted read-only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..config import IMAGES, Project
from ..contract import FLAG_CLEAR_DEVICES, FLAG_MODEL, FLAG_STRIP_DEFAULT_ATTRS, MOUNT_MODEL
from ..engine import Engine
from ..environments.images import BuildOptions, BuiltImage, ensure_image
from ..environments.matrix import environment_image_spec
from .model_argument import EITHER, resolve_model
from .model_finish import model_finisher
from .pipeline import StepConfig, StepSettings, run_step


@dataclass(frozen=True)
class ReexportRequest:
    model: Path
    out: Path
    clear_devices: bool = False
    strip_default_attrs: bool = False
    with_env: str | None = None  # a drift-matrix environment to re-export in (default: the inference image)
    matrix_path: Path = Path("drift/matrix.toml")
    settings: StepSettings = StepSettings()
    sign_key: Path | None = None  # sign the re-exported directory (model.sig); without, a copied one is dropped


def reexport_image(engine: Engine, project: Project, request: ReexportRequest) -> BuiltImage:
    """The inference image for --device, or the image of the drift-matrix environment --with names."""
    spec = IMAGES[f"infer-{request.settings.device}"]
    if request.with_env:
        spec = environment_image_spec(project, request.matrix_path, request.with_env, "--with")
    return ensure_image(engine, project, spec, BuildOptions(prefix=request.settings.prefix))


def reexport(connect: Callable[[], Engine], project: Project, request: ReexportRequest) -> Path:
    """Re-export into request.out; the engine is connected only once the model is found."""
    found = resolve_model(request.model, EITHER)
    arguments = [FLAG_MODEL, found.target] + ([FLAG_CLEAR_DEVICES] if request.clear_devices else []) + \
        ([FLAG_STRIP_DEFAULT_ATTRS] if request.strip_default_attrs else []) + list(request.settings.arguments)
    engine = connect()
    settings = request.settings
    step = StepConfig(name="reexport", role="infer", module="reexport", output=request.out.resolve(),
                      inputs={MOUNT_MODEL: found.directory}, arguments=tuple(arguments), device=settings.device,
                      memory=settings.memory, prefix=settings.prefix, timeout_s=settings.timeout_for("reexport"),
                      finish=model_finisher(None, request.sign_key))
    run_step(engine, project, step, reexport_image(engine, project, request))
    return request.out
