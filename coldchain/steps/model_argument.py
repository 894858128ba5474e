"""The model argument (--model or MODEL) of every command, turned into the folder mounted at the model's
mount point by one rule: a model directory (it holds manifest.json), the model file inside one (-> that
directory), or, for the commands that take one (doctor, reexport, adopt), a frozen graph without a
manifest, passed on by name for the container to read and diagnose."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..confine import check_input, check_model_directory, read_manifest
from ..contract import MANIFEST_FILE, MODEL_FILE, MOUNT_MODEL
from ..errors import UsageError

# What a command accepts as its model argument.
DIRECTORY = "directory"  # a model directory, or the model file in one (infer, convert, drift-test)
EITHER = "either"  # that, or a frozen graph without a manifest, for the container to read (doctor, reexport)
GRAPH = "graph"  # a frozen graph file, manifest or not (adopt)
NOT_FOUND_FIX = {
    DIRECTORY: "make one with 'make freeze' or 'coldchain adopt GRAPH --out DIR', or pass an existing model "
               "directory (or the model file in it)",
    EITHER: "pass a model directory or a frozen graph file (e.g. model.pb)",
    GRAPH: "pass the frozen graph file itself (e.g. frozen_resnet_v1_50.pb)",
}


@dataclass(frozen=True)
class ModelArgument:
    directory: Path  # resolved: the folder mounted read-only at MOUNT_MODEL
    graph: str | None  # the graph file's name in it when the container must be given the file, not the folder
    spelled: Path  # the folder as the user wrote it: reports record this, not this machine's absolute path

    @property
    def target(self) -> str:
        """The model as the container is told it: the mounted folder, or the graph file in it."""
        return MOUNT_MODEL if self.graph is None else f"{MOUNT_MODEL}/{self.graph}"


def _has_manifest(directory: Path) -> bool:
    try:
        return (directory / MANIFEST_FILE).is_file()
    except PermissionError as error:
        raise UsageError(f"{directory}: cannot read it ({error.strerror})",
                         fix="make the model directory readable, or pass a readable copy") from None


def _recorded_model_file(directory: Path) -> str:
    """The graph file the manifest describes (an adopted text-format graph keeps its .pbtxt name)."""
    manifest = read_manifest(directory)  # bounded: a manifest that is /dev/zero is refused here
    try:
        recorded = (manifest.get("model") or {}).get("file")
    except AttributeError:
        return MODEL_FILE  # a broken manifest is the container's to name, field by field
    return recorded if isinstance(recorded, str) and recorded and Path(recorded).name == recorded else MODEL_FILE


def _no_manifest(directory: Path, graph: Path) -> UsageError:
    return UsageError(f"{directory} has no {MANIFEST_FILE}: coldchain needs one beside the graph",
                      fix=f"if the graph was not made by coldchain, adopt it: coldchain adopt {graph} --out DIR "
                          "(it writes the manifest and golden outputs without changing the model), then pass DIR")


def resolve_model(model: Path, accepts: str = DIRECTORY) -> ModelArgument:
    """The folder to mount for MODEL, and what the container is told. A command that needs a model
    directory refuses a folder without manifest.json here, naming it, before any image is built; one
    that takes a bare graph passes a file on by name (the manifest beside it, if any, is the
    container's to read), and a folder without a manifest to the container, which says what it holds."""
    real = model.resolve()
    if not real.exists():
        raise UsageError(f"{model}: not found", fix=NOT_FOUND_FIX[accepts])
    is_file = not real.is_dir()
    if accepts == GRAPH and not is_file:
        raise UsageError(f"{model}: is a directory", fix=NOT_FOUND_FIX[GRAPH])
    directory = real.parent if is_file else real
    if is_file:
        check_input(real, "model", "model")  # a graph that is /dev/zero is refused, not read forever
    if accepts != GRAPH and (not is_file or (directory / MANIFEST_FILE).is_symlink() or _has_manifest(directory)):
        check_model_directory(directory)  # hostile files: links out, devices, names outside it
    # The user's spelling of the folder, unless the file is a link into another folder.
    spelled = model if not is_file else model.parent if model.parent.resolve() == directory else directory
    if accepts != DIRECTORY:
        return ModelArgument(directory, real.name if is_file else None, spelled)
    if not _has_manifest(directory):
        raise _no_manifest(directory, real if is_file else directory / MODEL_FILE)
    recorded = _recorded_model_file(directory)
    if is_file and real.name != recorded:
        raise UsageError(f"{real}: not the model {directory / MANIFEST_FILE} describes ({recorded})",
                         fix=f"pass the model directory {directory}")
    return ModelArgument(directory, None, spelled)


def model_directory(model: Path) -> Path:
    """The model directory MODEL names (itself, or the folder of the model file in it)."""
    return resolve_model(model).directory


def matrix_model(model: Path) -> Path:
    """The model drift-plan and the image transfers read the environment an adopted model brings from.
    They run before the model exists (a CI plan or build job): a model not there yet, or a folder
    without a manifest, brings none, as before; a model file stands for its folder."""
    if not model.exists():
        return model
    return resolve_model(model, EITHER).directory
