"""Shared helpers with no TensorFlow dependency: errors, atomic writes, CLI plumbing."""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import json
import os
import sys
import tempfile
import zipfile
from typing import Any, Callable, Mapping, Sequence

import numpy as np


class InsideError(Exception):
    """A user-facing problem (bad input, bad flags). Printed as one line, never as a traceback."""

    exit_code = 2


class PreflightFailed(InsideError):
    """The graph cannot run on this runtime; distinct exit code so the host can tell it apart."""

    exit_code = 3


class GoldenMismatch(InsideError):
    """The frozen model computes different numbers here than where it was frozen."""

    exit_code = 4


def log(message: str) -> None:
    """Progress goes to stderr so stdout stays clean for machine-readable output."""
    print(message, file=sys.stderr, flush=True)


def run_main(entry: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a CLI entry point, turning InsideError into a single stderr line and an exit code."""
    try:
        code = entry(argv)
    except InsideError as error:
        print(f"coldchain: error: {error}", file=sys.stderr, flush=True)
        return error.exit_code
    except KeyboardInterrupt:
        print("coldchain: error: interrupted", file=sys.stderr, flush=True)
        return 130
    return 0 if code is None else code


def quiet_tensorflow_logs() -> None:
    """TF's C++ INFO/WARNING spam drowns our progress lines; keep errors only unless the user asked."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Readers must never see a half-written artifact, so write a sibling temp file and rename."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, temp_path = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600; artifacts are shared between containers running as other users.
        os.chmod(temp_path, 0o644)
        os.replace(temp_path, path)
    except BaseException as error:
        if os.path.exists(temp_path):
            os.unlink(temp_path)
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            raise InsideError(f"cannot write {path}: the disk is full ({len(data)} bytes needed); nothing was "
                              "replaced - free space and rerun") from None
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    # The rename itself is only durable once the directory entry is flushed.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def canonical_json(value: Any) -> str:
    """Sorted keys and fixed indent so identical content gives identical bytes."""
    return json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def atomic_write_json(path: str, value: Any) -> None:
    atomic_write_bytes(path, canonical_json(value).encode("utf-8"))


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_deterministic_npz(path: str, arrays: Mapping[str, np.ndarray]) -> None:
    """np.savez stamps the current time into each zip entry; fix the date so bytes are reproducible."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key in sorted(arrays):
            entry = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            array_bytes = io.BytesIO()
            np.lib.format.write_array(array_bytes, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            archive.writestr(entry, array_bytes.getvalue())
    atomic_write_bytes(path, buffer.getvalue())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_json_file(path: str, what: str, fix: str) -> Any:
    try:
        with open(path, "r", encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise InsideError(f"{what} not found: {path}; {fix}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InsideError(f"{what} {path} is not readable JSON ({error}); {fix}") from None


def dataclass_to_json(config: Any) -> dict:
    return dataclasses.asdict(config)


def parse_scope_list(text: str | None) -> tuple[str, ...]:
    """Comma-separated scope flags as slim writes them; blanks are ignored."""
    if not text:
        return ()
    return tuple(part.strip() for part in text.split(",") if part.strip())


def read_labels_file(path: str) -> list[str]:
    """Accept our one-name-per-line labels.txt as well as slim's `id:name` lines."""
    try:
        with open(path, "r", encoding="utf-8") as handle:
            lines = [line.rstrip("\n\r") for line in handle]
    except FileNotFoundError:
        raise InsideError(f"labels file not found: {path}; write one class name per line (or slim's id:name)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InsideError(f"cannot read labels file {path} ({error}); it must be UTF-8 text") from None
    lines = [line for line in lines if line.strip()]
    if lines and all(":" in line and line.split(":", 1)[0].strip().isdigit() for line in lines):
        by_id = {}
        for line in lines:
            key, name = line.split(":", 1)
            by_id[int(key)] = name.strip()
        count = max(by_id) + 1
        missing = [index for index in range(count) if index not in by_id]
        if missing:
            raise InsideError(f"labels file {path} has no name for class ids {missing[:5]}; list every id from 0")
        return [by_id[index] for index in range(count)]
    return [line.strip() for line in lines]


def silence_tensorflow_deprecations() -> None:
    """The v1 APIs we rely on on purpose log deprecation notices; they would bury our progress lines."""
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
