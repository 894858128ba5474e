"""The host's handle on scripts/incontainer/confine.py (hostile inputs refused before they are read),
loaded from that one file by path as coldchain/contract.py loads the contract, its refusals raised as
UsageError (exit 2), and the host's bounded reads of a model directory's manifest."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from .contract import MANIFEST_FILE
from .errors import UsageError

CONFINE_FILE = Path(__file__).resolve().parent.parent / "scripts" / "incontainer" / "confine.py"


def _load():
    spec = importlib.util.spec_from_file_location("coldchain._shared_confine", CONFINE_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


shared = _load()
Refused = shared.Refused
LIMITS = shared.LIMITS


def refused(error: Exception) -> UsageError:
    """A shared refusal as the host's bad-input error: one line naming the file, with the fix."""
    text = str(error)
    message, _, fix = text.partition("; ")
    return UsageError(message, fix=fix or None)


def read_manifest(model: Path) -> Any:
    """A model directory's manifest.json, read within its limit from a regular file (never
    `manifest.json -> /dev/zero`); None when there is none or it is no JSON (the container names
    that field by field). A refused file is raised as UsageError."""
    path = model / MANIFEST_FILE
    if not path.exists():
        return None
    try:
        data = shared.read_bounded(str(path), "manifest", str(model))
    except Refused as error:
        raise refused(error) from None
    except OSError:
        return None
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None


def check_model_directory(model: Path) -> None:
    """What infer, doctor and drift-test refuse before any container runs: a model directory whose
    files are not regular files or link outside it, an oversized or device manifest, and a manifest
    naming a file outside the directory."""
    try:
        shared.check_tree(str(model))
    except Refused as error:
        raise refused(error) from None
    manifest = read_manifest(model)
    if isinstance(manifest, dict):
        for where, name in named_files(manifest):
            try:
                target = model / shared.plain_name(name, where, str(model / MANIFEST_FILE))
            except Refused as error:
                raise refused(error) from None
            if target.exists() and not shared.inside(str(model), str(target)):
                raise UsageError(f"{target}: links outside {model}", fix="copy the file itself into the directory")


def named_files(manifest: dict) -> list[tuple[str, Any]]:
    """(field, name) of every file a manifest names relative to its directory."""
    found: list[tuple[str, Any]] = []
    model = manifest.get("model")
    if isinstance(model, dict) and "file" in model:
        found.append(("model.file", model["file"]))
    golden = manifest.get("golden")
    if isinstance(golden, dict):
        if "file" in golden:
            found.append(("golden.file", golden["file"]))
        encoded = golden.get("encoded")
        for index, entry in enumerate(encoded.get("files") or [] if isinstance(encoded, dict) else []):
            if isinstance(entry, dict):
                found.append((f"golden.encoded.files[{index}].name", entry.get("name")))
    for index, entry in enumerate(manifest.get("custom_ops") or []):
        if isinstance(entry, dict) and "library" in entry:
            found.append((f"custom_ops[{index}].library", entry["library"]))
    adopted = manifest.get("adopted")
    environment = adopted.get("environment") if isinstance(adopted, dict) else None
    files = environment.get("files") if isinstance(environment, dict) else None
    for key, name in (files.items() if isinstance(files, dict) else []):
        found.append((f"adopted.environment.files.{key}", name))
    return found


def check_input(path: Path, kind: str, flag: str) -> None:
    """A file or folder the user passes (labels, images): a regular file within its kind's limit, or a
    folder; never a device such as /dev/zero, which a container would read forever."""
    try:
        if path.exists() and not path.is_dir():
            shared.regular_file(str(path), kind)
    except Refused as error:
        message, _, fix = str(error).partition("; ")
        raise UsageError(f"{message} ({flag})", fix=fix or None) from None


def confined_file(model: Path, name: Any, where: str) -> Path:
    """A file a manifest names (e.g. adopted.environment.files), inside the model directory, every
    link followed: a manifest cannot point the drift test at a lock elsewhere on this machine."""
    source = str(model / MANIFEST_FILE)
    try:
        path = model / shared.plain_name(name, where, source)
    except Refused as error:
        raise refused(error) from None
    if not shared.inside(str(model), str(path)):
        raise UsageError(f"{source}: {where} {name!r} leads to {path.resolve()}, outside {model}",
                         fix="copy the file itself into the model directory")
    return path
