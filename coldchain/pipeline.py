"""The main job on the host side: each step (data, train, freeze, infer) runs in its own
container from the locked images, hardened, with inputs mounted read-only and one writable
output directory. Outputs are produced in a staging directory and renamed into place only
when the step succeeds, so a failed step never leaves a half-written result behind."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .config import IMAGES, KIT_LABEL, RUN_LABEL, Project
from .engine import Engine, Mount, RunSpec
from .errors import ContainerError, UsageError
from .images import BuildOptions, BuiltImage, build_images

log = logging.getLogger(__name__)
CONTAINER_USER = "10001:10001"
STEP_PREFIXES = ("train:", "freeze:", "infer:", "make_data:", "preflight:", "data:", "coldchain:", "reexport:",
                  "doctor:", "probe:")
EXIT_MEANINGS = {2: "bad input", 3: "pre-flight found problems", 4: "golden check failed",
                 137: "killed (out of memory or SIGKILL)", 130: "interrupted"}


@dataclass(frozen=True)
class StepConfig:
    """One containerised step: which image, what module, what goes in and where it comes out."""

    name: str  # data | train | freeze | infer
    role: str  # train | infer: which image
    module: str  # incontainer.<module>
    output: Path  # host path of the output (a directory, or a file for infer)
    inputs: dict[str, Path] = field(default_factory=dict)  # container path -> host path, read-only
    arguments: tuple[str, ...] = ()
    device: str = "cpu"
    memory: str = "8g"
    prefix: str = "coldchain"
    run_id: str = "coldchain"
    output_is_file: bool | None = None  # default: only infer writes a single file

    @property
    def writes_file(self) -> bool:
        return self.name == "infer" if self.output_is_file is None else self.output_is_file


def _user_for_outputs(staging: Path) -> str:
    """Containers never run as root. As root on the host, hand the staging directory to the
    image's user; otherwise run as the calling user so the outputs stay theirs."""
    if os.geteuid() == 0:
        for path in (staging, *staging.rglob("*")):
            os.chown(path, 10001, 10001)
        return CONTAINER_USER
    return f"{os.getuid()}:{os.getgid()}"


def container_user() -> str:
    """Who read-only containers run as: the caller (so their own files are readable), or the
    images' unprivileged user when the caller is root."""
    return CONTAINER_USER if os.geteuid() == 0 else f"{os.getuid()}:{os.getgid()}"


def _restore_owner(path: Path) -> None:
    if os.geteuid() == 0:
        for item in (path, *path.rglob("*")) if path.is_dir() else (path,):
            os.chown(item, 0, 0, follow_symlinks=False)


def ensure_images(engine: Engine, project: Project, role: str, device: str, prefix: str) -> BuiltImage:
    (built,) = build_images(engine, project, [IMAGES[f"{role}-{device}"]], BuildOptions(prefix=prefix))
    return built


def run_step(engine: Engine, project: Project, step: StepConfig, image: BuiltImage) -> str:
    """Run the step; on success move its output into place and return the container's stdout."""
    for host_path in step.inputs.values():
        if not host_path.exists():
            raise UsageError(f"{host_path}: not found (input of '{step.name}')",
                             fix=f"create it first, e.g. with 'make {'data' if step.name == 'train' else 'train'}'")
    output_is_file = step.writes_file
    step.output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=step.output.parent, prefix=f".{step.output.name}.staging-"))
    staging.chmod(0o755)  # mkdtemp's 0700 would keep the next step's container user out
    try:
        mounts = [Mount(path.resolve(), target, read_only=True) for target, path in sorted(step.inputs.items())]
        mounts.append(Mount(staging.resolve(), "/out", read_only=False))
        target = f"/out/{step.output.name}" if output_is_file else "/out"
        environment = {"COLDCHAIN_IMAGE_ID": image.info.id,
                       "COLDCHAIN_IMAGE_LABELS": json.dumps(image.info.labels, sort_keys=True),
                       "COLDCHAIN_LOCK_SHA256": image.info.labels.get("io.coldchain.lock.sha256", ""),
                       "COLDCHAIN_PATH_MAP": json.dumps({target: str(path) for target, path in step.inputs.items()})}
        # By id, not tag: another checkout may re-tag coldchain-*:* while this step runs.
        spec = RunSpec(image=image.info.id, command=("python", "-m", f"incontainer.{step.module}", *_with_output(step, target)),
                       mounts=tuple(mounts), environment=environment, user=_user_for_outputs(staging),
                       mem_limit=step.memory, gpus=step.device == "cuda" and engine.gpu_runtime(),
                       labels={KIT_LABEL: "coldchain", RUN_LABEL: step.run_id})
        log.info("%s: %s in %s", step.name, " ".join(spec.command[2:]), image.tag)
        result = engine.run(spec, log=_progress(step.name))
        if result.exit_code != 0:
            raise _step_error(step, spec, result, image.tag)
        produced = staging / step.output.name if output_is_file else staging
        _restore_owner(produced)
        _replace(produced, step.output)
        return result.stdout
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _progress(name: str):
    def sink(line: str) -> None:
        # The steps' own progress lines are worth seeing; TF's C++ chatter only with -v.
        level = logging.INFO if line.startswith(STEP_PREFIXES) \
            else logging.DEBUG
        log.log(level, "%s | %s", name, line)
    return sink


def _with_output(step: StepConfig, target: str) -> tuple[str, ...]:
    flag = "--output" if step.writes_file else "--out"
    return (flag, target, *step.arguments)


def _replace(produced: Path, destination: Path) -> None:
    """Swap the new output in; an older result is removed only after the new one is complete."""
    if destination.is_dir() and not destination.is_symlink():
        # A unique name: two runs finishing at once must not trip over each other's old copy.
        old = destination.with_name(f".{destination.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(destination, old)
        os.replace(produced, destination)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(produced, destination)


def _step_error(step: StepConfig, spec: RunSpec, result, tag: str) -> ContainerError:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    ours = [line for line in lines if line.startswith("coldchain: error:")]
    meaning = EXIT_MEANINGS.get(result.exit_code, "failed")
    if result.oom_killed:
        meaning = f"killed for exceeding its memory limit ({step.memory})"
    message = ours[-1].removeprefix("coldchain: error: ") if ours else f"{step.name} {meaning} (exit {result.exit_code})"
    # Name files as the user knows them, not by their mount points in the container.
    for target, path in sorted(step.inputs.items(), key=lambda item: -len(item[0])):
        message = message.replace(target, str(path))
    fix = {2: "fix the input the message names and rerun",
           3: "see the findings; 'coldchain doctor' explains each one",
           4: "the model computes different numbers here than where it was frozen; compare the environments"}.get(
        result.exit_code, f"raise the memory limit (--memory) and rerun" if result.oom_killed else None)
    error = ContainerError(f"{step.name}: {message}", image=tag, command=list(spec.command),
                           container_exit=result.exit_code, log_tail="\n".join(lines[-25:]), fix=fix)
    if result.exit_code in (2, 3, 4):
        error.exit_code = result.exit_code  # the in-container meaning carries through to the CLI
    return error
