"""The one way the host runs an in-container module: hardened, labelled, time-limited, the image's
identity passed in, mount points mapped to host paths (the container names the user's files
itself), and its one error line turned into a ContainerError with the right exit code.

Every step, drift case, doctor run, bench run and heatmap goes through run_module."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..config import KIT_LABEL, PLATFORM_LABEL, RUN_LABEL
from ..contract import (ENV_EMULATED_CPU, ENV_IMAGE_ID, ENV_IMAGE_LABELS, ENV_LOCK_SHA256, ENV_PATH_MAP, EXIT_MEANINGS,
                        MODULES, MOUNT_EMULATOR, VENV_PYTHON, Exit, is_progress, last_error)
from ..engine import Engine, Mount, RunResult, RunSpec
from ..environments.image_sbom import SBOM_LABEL
from ..errors import ContainerError, ContainerTimeout

log = logging.getLogger(__name__)
# The images' unprivileged user (USER 10001:10001 in every Dockerfile): containers run as it when the
# caller is root.
CONTAINER_UID = CONTAINER_GID = 10001
CONTAINER_USER = f"{CONTAINER_UID}:{CONTAINER_GID}"
# The meanings a container may report that reach the user unchanged.
PASSED_THROUGH = (Exit.USAGE, Exit.MODEL_BLOCKED, Exit.GOLDEN_MISMATCH, Exit.PREPROCESSING_MISMATCH,
                  Exit.OUTPUT, Exit.OUT_OF_MEMORY, Exit.INTERRUPTED)
DEFAULT_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class Image:
    """An image as a run needs it: run by id (another checkout may re-tag coldchain-* meanwhile)."""

    id: str
    tag: str
    labels: dict = field(default_factory=dict)

    @classmethod
    def of(cls, built) -> "Image":
        """From a BuiltImage (or an Image already)."""
        if isinstance(built, Image):
            return built
        return cls(built.info.id, built.tag, dict(built.info.labels))


@dataclass(frozen=True)
class ModuleRun:
    image: Image
    module: str  # a key of contract.MODULES
    arguments: tuple = ()
    what: str = ""  # how messages name this run ("freeze", "drift case onednn-off", ...)
    inputs: dict = field(default_factory=dict)  # mount point -> host path, read-only
    output: Mount | None = None  # the one writable mount
    # What the output mount stands for to the user (the output directory, or the output file's folder),
    # when it is a staging directory: a container's messages then name the place the user asked for.
    output_stands_for: Path | None = None
    environment: dict = field(default_factory=dict)
    memory: str = "8g"
    timeout_s: float = DEFAULT_TIMEOUT_S
    gpus: bool = False
    run_id: str = "coldchain"
    name: str | None = None
    user: str | None = None  # default: container_user()
    read_only_root: bool = True
    tmpfs: dict | None = None
    # (the host's static qemu-x86_64, an x86-64 CPU model): Python runs as that CPU under emulation.
    emulator: tuple[Path, str] | None = None

    @property
    def label(self) -> str:
        return self.what or self.module


def container_user() -> str:
    """Who containers run as: the caller (so their own files are readable), or the images'
    unprivileged user when the caller is root."""
    return CONTAINER_USER if os.geteuid() == 0 else f"{os.getuid()}:{os.getgid()}"


def hand_to_container_user(*paths: Path) -> None:
    """Make `paths` writable by the containers' user: as root on the host, give them to the images'
    user; as anyone else there is nothing to do (containers run as the caller)."""
    if os.geteuid() == 0:
        for path in paths:
            os.chown(path, CONTAINER_UID, CONTAINER_GID)


def path_map(run: ModuleRun) -> dict:
    """What each input mount point stands for on the host, and the output's: the place the user asked for
    (the container writes into a staging directory beside it, moved there when the step succeeds)."""
    mapping = {mount: str(path) for mount, path in run.inputs.items()}
    if run.output is not None and run.output_stands_for is not None:
        mapping[run.output.target] = str(run.output_stands_for)
    return mapping


def spec_for(run: ModuleRun) -> RunSpec:
    mounts = [Mount(Path(path).resolve(), target, read_only=True) for target, path in sorted(run.inputs.items())]
    if run.output is not None:
        mounts.append(run.output)
    # Not the SBOM itself (60 KB or more; its sha256 label names it): an environment string over 128 KiB
    # fails the container's exec, and the labels go into every manifest and report.
    labels = {key: value for key, value in run.image.labels.items() if key != SBOM_LABEL}
    environment = {ENV_IMAGE_ID: run.image.id, ENV_IMAGE_LABELS: json.dumps(labels, sort_keys=True),
                   ENV_LOCK_SHA256: run.image.labels.get("io.coldchain.lock.sha256", ""),
                   ENV_PATH_MAP: json.dumps(path_map(run), sort_keys=True), **run.environment}
    extra = {"tmpfs": run.tmpfs} if run.tmpfs is not None else {}
    python: tuple[str, ...] = ("python",)
    if run.emulator is not None:
        qemu, cpu = run.emulator
        mounts.append(Mount(Path(qemu), MOUNT_EMULATOR, read_only=True))
        environment[ENV_EMULATED_CPU] = cpu
        python = (MOUNT_EMULATOR, "-cpu", cpu, VENV_PYTHON)  # qemu-user runs a path; it does not search PATH
    return RunSpec(image=run.image.id, command=(*python, "-m", MODULES[run.module], *run.arguments),
                   mounts=tuple(mounts), environment=environment, user=run.user or container_user(),
                   mem_limit=run.memory, gpus=run.gpus, labels={KIT_LABEL: "coldchain", RUN_LABEL: run.run_id},
                   name=run.name, timeout_s=run.timeout_s, read_only_root=run.read_only_root,
                   platform=run.image.labels.get(PLATFORM_LABEL), **extra)


def progress(name: str) -> Callable[[str], None]:
    """Lines worth showing at the default log level: the kit's progress (contract.PROGRESS_PREFIXES),
    not TensorFlow's C++ chatter."""
    def sink(line: str) -> None:
        log.log(logging.INFO if is_progress(line) else logging.DEBUG, "%s | %s", name, line)
    return sink


def run_module(engine: Engine, run: ModuleRun, *, check: bool = True, sink: Callable[[str], None] | None = None
               ) -> RunResult:
    """Run the module; with `check`, a non-zero exit raises the ContainerError it means."""
    spec = spec_for(run)
    log.debug("%s: %s in %s", run.label, " ".join(spec.command), run.image.tag)
    result = engine.run(spec, log=sink or progress(run.label))
    if result.timed_out or (check and result.exit_code != 0):
        raise failure(run, spec, result)
    return result


def failure(run: ModuleRun, spec: RunSpec, result: RunResult) -> ContainerError:
    """The one reading of a failed container: its error line (already naming host paths), its exit
    code's meaning, a kill for memory or for time."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    tail = "\n".join(lines[-25:])
    common = dict(image=run.image.tag, command=list(spec.command), container_exit=result.exit_code, log_tail=tail)
    if result.timed_out:
        return ContainerTimeout(f"{run.label} in {run.image.tag} hung: still running after {run.timeout_s:.0f} s, "
                                "so it was killed", fix="look at the log tail for where it stopped; if it was only "
                                "slow, raise the limit (--timeout / COLDCHAIN_TIMEOUT)", **common)
    if result.oom_killed:
        return ContainerError(f"{run.label} was killed for exceeding its memory limit ({run.memory})",
                              fix="raise the memory limit (--memory) and rerun", exit_code=Exit.OUT_OF_MEMORY, **common)
    message = last_error(result.stderr)
    meaning = EXIT_MEANINGS.get(result.exit_code, "failed")
    exit_code = result.exit_code if result.exit_code in PASSED_THROUGH else Exit.CONTAINER
    if message is None:
        if result.exit_code == 137:
            meaning = "killed (SIGKILL)"
        return ContainerError(f"{run.label} {meaning} (exit {result.exit_code})",
                              fix="read the log tail above", exit_code=exit_code, **common)
    fix = {Exit.USAGE: "fix the input the message names and rerun",
           Exit.MODEL_BLOCKED: "see the findings: 'coldchain doctor MODEL' explains each one and its fix",
           Exit.GOLDEN_MISMATCH: "the model computes other numbers here than where its golden was made: compare the "
                                 "environments with 'coldchain doctor' and 'make drift-test'",
           Exit.PREPROCESSING_MISMATCH: "preprocess exactly as the manifest says",
           Exit.OUTPUT: "free space where the message says (or choose a writable output) and rerun; nothing "
                        "was replaced"}.get(result.exit_code)
    # The message says it all; only an unclassified failure (an internal error's traceback) shows the tail.
    common["log_tail"] = tail if exit_code == Exit.CONTAINER else None
    return ContainerError(f"{run.label}: {message}", fix=fix, exit_code=exit_code, **common)


def last_json(result: RunResult, run: ModuleRun) -> dict:
    """The JSON object a module printed last on stdout."""
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise ContainerError(f"{run.label} printed no JSON result", image=run.image.tag, command=[run.module],
                             container_exit=result.exit_code, log_tail=result.stderr[-2000:],
                             fix="read the log tail above") from None
