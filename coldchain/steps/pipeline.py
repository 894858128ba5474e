"""The main job on the host side: each step (data, train, freeze, infer, adopt, reexport) runs in its
own container from the locked images, hardened, with inputs mounted read-only and one writable
output directory. Outputs are produced in a staging directory and renamed into place only when the
step succeeds, so a failed step never leaves a half-written result behind."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..config import IMAGES, Project
from ..contract import FLAG_OUT, FLAG_OUTPUT, FLAG_RUN, MOUNT_OUT, MOUNT_RUN
from ..engine import Engine, Mount
from ..environments.images import BuildOptions, BuiltImage, ensure_image
from ..errors import UsageError
from ..fsutil import replace_output as swap_output, writing
from ..owner import Owner
from .runner import DEFAULT_TIMEOUT_S, Image, ModuleRun, container_user, hand_to_container_user, run_module
from .sweep import sweep_directories

log = logging.getLogger(__name__)
# Which make target produces what a step reads, for the "not found" fix.
PRODUCED_BY = {"train": "make data", "freeze": "make train", "infer": "make freeze"}
TRAIN_TIMEOUT_S = 4 * 3600.0
STEP_TIMEOUT_S = DEFAULT_TIMEOUT_S


@dataclass(frozen=True)
class StepSettings:
    """What the user chose for any containerised step command: --device, --memory, --prefix, --timeout,
    and the arguments the host does not know, passed on to the container's module."""

    device: str = "cpu"
    memory: str = "8g"
    prefix: str = "coldchain"
    timeout_s: float | None = None  # None: the step's own limit (timeout_for)
    arguments: tuple[str, ...] = ()

    def timeout_for(self, name: str) -> float:
        return self.timeout_s or (TRAIN_TIMEOUT_S if name == "train" else STEP_TIMEOUT_S)


@dataclass(frozen=True)
class StepConfig:
    """One containerised step: which image, what module, what goes in and where it comes out."""

    name: str  # data | train | freeze | infer | adopt | reexport | ...
    role: str  # train | infer: which image
    module: str  # a key of contract.MODULES
    output: Path  # host path of the output (a directory, or a file for infer)
    inputs: dict = field(default_factory=dict)  # container path -> host path, read-only
    arguments: tuple = ()
    device: str = "cpu"
    memory: str = "8g"
    prefix: str = "coldchain"
    run_id: str = "coldchain"
    output_is_file: bool | None = None  # default: only infer writes a single file
    timeout_s: float = DEFAULT_TIMEOUT_S
    environment: dict = field(default_factory=dict)
    # Run on the finished output before it is renamed into place (the SBOM, the signature): a failure
    # there leaves the old output as it was.
    finish: Callable[[Path], None] | None = None

    @property
    def writes_file(self) -> bool:
        return self.name == "infer" if self.output_is_file is None else self.output_is_file


def freeze_step(run: Path, output: Path, arguments: tuple[str, ...] = (), **settings) -> StepConfig:
    """Freezing the training run `run` into the model directory `output` in the training image, with
    freeze's further `arguments`; `settings` are StepConfig's (prefix, run_id, memory, timeout_s)."""
    return StepConfig(name="freeze", role="train", module="freeze", output=output, inputs={MOUNT_RUN: run},
                      arguments=(FLAG_RUN, MOUNT_RUN, *arguments), **settings)


def _user_for_outputs(staging: Path) -> str:
    """Containers never run as root. As root on the host, hand the staging directory to the
    image's user; otherwise run as the calling user so the outputs stay theirs."""
    hand_to_container_user(staging, *staging.rglob("*"))
    return container_user()


def _restore_owner(path: Path) -> None:
    if os.geteuid() == 0:
        for item in (path, *path.rglob("*")) if path.is_dir() else (path,):
            os.chown(item, 0, 0, follow_symlinks=False)


def ensure_images(engine: Engine, project: Project, role: str, device: str, prefix: str) -> BuiltImage:
    return ensure_image(engine, project, IMAGES[f"{role}-{device}"], BuildOptions(prefix=prefix))


def run_step(engine: Engine, project: Project, step: StepConfig, image: BuiltImage, timing: dict | None = None) -> str:
    """Run the step; on success move its output into place and return the container's stdout.
    `timing["container"]` gets the container's seconds from create to exit."""
    for host_path in step.inputs.values():
        if not host_path.exists():
            made_by = PRODUCED_BY.get(step.name)
            raise UsageError(f"{host_path}: not found (input of '{step.name}')",
                             fix=f"create it first{f', e.g. with {made_by!r}' if made_by else ''}, or pass the "
                                 "right path")
    with writing(step.output):
        step.output.parent.mkdir(parents=True, exist_ok=True)
        sweep_directories(step.output.parent)  # a dead run's staging beside this output
        staging = Path(tempfile.mkdtemp(dir=step.output.parent,
                                        prefix=f".{step.output.name}.staging-{Owner.current().mark}-"))
        staging.chmod(0o755)  # mkdtemp's 0700 would keep the next step's container user out
    try:
        target = f"{MOUNT_OUT}/{step.output.name}" if step.writes_file else MOUNT_OUT
        flag = FLAG_OUTPUT if step.writes_file else FLAG_OUT
        run = ModuleRun(image=Image.of(image), module=step.module, arguments=(flag, target, *step.arguments),
                        what=step.name, inputs=dict(step.inputs), output=Mount(staging.resolve(), MOUNT_OUT, False),
                        output_stands_for=step.output.parent if step.writes_file else step.output,
                        environment=dict(step.environment), memory=step.memory, timeout_s=step.timeout_s,
                        gpus=step.device == "cuda" and engine.gpu_runtime(), run_id=step.run_id,
                        user=_user_for_outputs(staging))
        log.info("%s: %s in %s", step.name, " ".join(run.arguments), image.tag)
        result = run_module(engine, run)
        if timing is not None:
            timing["container"] = result.seconds
        produced = staging / step.output.name if step.writes_file else staging
        if step.writes_file and not produced.exists():
            return result.stdout  # nothing to put in place (infer --golden-only writes no predictions)
        with writing(step.output):
            _restore_owner(produced)
        if step.finish is not None:
            step.finish(produced)
        with writing(step.output):
            _replace(produced, step.output)
        return result.stdout
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_output(produced: Path, destination: Path) -> None:
    """A step's finished output swapped in where a step made several at once (convert's targets)."""
    with writing(destination):
        _replace(produced, destination)


def _replace(produced: Path, destination: Path) -> None:
    """Swap the new output in under its lock; an older result is removed only after the new one is complete."""
    # A unique, owner-marked name: two runs finishing at once must not trip over each other's old copy.
    swap_output(produced, destination,
                   old_name=f".{destination.name}.old-{Owner.current().mark}-{uuid.uuid4().hex[:8]}")
