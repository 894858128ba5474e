"""Errors, atomic writes and CLI plumbing shared by every in-container module (no TensorFlow here)."""
from __future__ import annotations

import errno
import hashlib
import importlib
import io
import json
import os
import re
import sys
import tempfile
import time
import traceback
import zipfile
from typing import Any, Callable, Mapping, Optional, Sequence

from .confine import Refused
from .contract import (ENV_PATH_MAP, MOUNT_CONVERSIONS, MOUNT_OUT, PROGRESS_KIT, Exit, error_line, is_progress,
                       map_paths)


class InsideError(Exception):
    """A user-facing problem, printed as one error line (never a traceback). `code` is the finding
    code when the problem is one the diagnosis names (contract.Code)."""

    exit_code = Exit.USAGE

    def __init__(self, message: str, code: Optional[str] = None):
        super().__init__(message)
        self.code = code


class PreflightFailed(InsideError):
    """This runtime cannot load or run the graph."""

    exit_code = Exit.MODEL_BLOCKED


class GoldenMismatch(InsideError):
    """The frozen model computes other numbers here than where its golden was made."""

    exit_code = Exit.GOLDEN_MISMATCH


class PreprocessingMismatch(InsideError):
    """This runtime's preprocessing does not reproduce the tensor the golden was made from."""

    exit_code = Exit.PREPROCESSING_MISMATCH


class OutputFailed(InsideError):
    """An output could not be written (disk full, read-only, no permission); nothing was replaced."""

    exit_code = Exit.OUTPUT


# Errors that only a write gives: whichever file they name, the output is what failed.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
# Errors a read gives too: an output only when they name a file under a writable mount.
PERMISSION_ERRNOS = (errno.EACCES, errno.EPERM)
WRITABLE_MOUNTS = (MOUNT_OUT, MOUNT_CONVERSIONS)
# TensorFlow's own writers (checkpoints, tf.io.gfile) raise its errors, not OSError: their words.
WRITE_FAILURE_WORDS = ("No space left on device", "Disk quota exceeded", "Read-only file system")


def free_space(path: str) -> Optional[int]:
    """Bytes free to this user on the disk that holds `path` (its nearest existing parent)."""
    directory = os.path.abspath(path or ".")
    while not os.path.exists(directory) and os.path.dirname(directory) != directory:
        directory = os.path.dirname(directory)
    try:
        stats = os.statvfs(directory)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def _under_writable_mount(path: str) -> bool:
    return any(path == mount or path.startswith(mount + "/") for mount in WRITABLE_MOUNTS)


def output_failure(error: BaseException, written: Optional[str] = None) -> Optional[OutputFailed]:
    """The write failure `error` stands for, its path named as on the host with the free space there;
    None when it is not one (a read that failed, a bug). `written`: the file being written, when known."""
    if isinstance(error, OSError):
        path = str(written or error.filename or MOUNT_OUT)
        permission = error.errno in PERMISSION_ERRNOS and (written is not None or _under_writable_mount(path))
        if error.errno not in WRITE_ERRNOS and not permission:
            return None
        reason = os.strerror(error.errno).lower()
    else:
        words = next((words for words in WRITE_FAILURE_WORDS if words in str(error)), None)
        if words is None:
            return None
        path, reason = MOUNT_OUT, words.lower()
    free = free_space(path)
    shown = f"{free / 1e9:.2f} GB free there" if free is not None else "free space unknown"
    return OutputFailed(host_paths(f"cannot write {path}: {reason} ({shown}); nothing was replaced - free space "
                                   "or choose a writable output, then rerun"))


def log(message: str) -> None:
    """Progress goes to stderr so stdout stays clean for machine-readable output. The host shows only
    lines with a contract progress prefix ("infer: ...") at its default level: one without is given
    the kit's own, so that no progress is hidden."""
    if not is_progress(message):
        message = f"{PROGRESS_KIT} {message}"
    print(host_paths(message), file=sys.stderr, flush=True)


def path_map() -> dict:
    """Mount point -> host path, as the host passed it; empty outside coldchain's containers."""
    try:
        mapping = json.loads(os.environ.get(ENV_PATH_MAP) or "{}")
    except ValueError:
        return {}
    return mapping if isinstance(mapping, dict) else {}


def host_paths(text: str) -> str:
    """Name files as the user knows them: every mount point in `text` becomes its host path."""
    mapping = path_map()
    return map_paths(text, mapping) if mapping else text


def _mapped(value: Any) -> Any:
    if isinstance(value, str):
        return host_paths(value)
    if isinstance(value, dict):
        return {key: _mapped(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mapped(item) for item in value]
    return value


def emit_json(value: Any, indent: Optional[int] = None) -> None:
    """The machine-readable result: one JSON document on stdout, paths named as on the host."""
    print(json.dumps(_mapped(value), sort_keys=True, indent=indent, default=str), flush=True)


def run_main(entry: Callable[[Optional[Sequence[str]]], Optional[int]], argv: Optional[Sequence[str]] = None) -> int:
    """Run a CLI entry point: a known problem is one error line and its exit code; anything else
    is an internal error, whose traceback goes to stderr before the error line."""
    try:
        code = entry(argv)
    except InsideError as error:
        print(error_line(host_paths(str(error))), file=sys.stderr, flush=True)
        return error.exit_code
    except Refused as error:  # a hostile input (confine.py): bad input, never a finding to weigh
        print(error_line(host_paths(str(error))), file=sys.stderr, flush=True)
        return Exit.USAGE
    except KeyboardInterrupt:
        print(error_line("interrupted"), file=sys.stderr, flush=True)
        return Exit.INTERRUPTED
    except MemoryError:
        print(error_line("out of memory; raise the container's memory limit (--memory)"), file=sys.stderr, flush=True)
        return Exit.OUT_OF_MEMORY
    except Exception as error:  # noqa: BLE001 - the last line of defence against a raw traceback
        failed = output_failure(error)
        if failed is not None:
            print(error_line(str(failed)), file=sys.stderr, flush=True)
            return failed.exit_code
        traceback.print_exc(file=sys.stderr)
        print(error_line(host_paths(f"internal error: {type(error).__name__}: {error}; this is a coldchain bug, "
                                    "please report it with the log above")), file=sys.stderr, flush=True)
        return Exit.CONTAINER
    return Exit.OK if code is None else code


# What TensorFlow's CPU wheels print at import on a machine without CUDA or TensorRT: true of every
# CPU image and not a fault (TF registers its CUDA plugins twice; TensorRT is optional). Only these
# lines are dropped; anything else TF prints at import is kept.
IMPORT_NOISE = re.compile(r"Unable to register (cuDNN|cuFFT|cuBLAS) factory|TF-TRT Warning: Could not find TensorRT"
                          r"|Could not find cuda drivers on your machine")


TIMINGS: dict = {}  # phases measured before a step's own code runs (tensorflow_import_s)


def quiet_tensorflow_logs(import_now: bool = True) -> None:
    """TF's C++ INFO/WARNING lines (CUDA factories, TensorRT, CPU features) drown the kit's own
    progress lines; keep errors only unless the user asked for more, and import TensorFlow with its
    known import-time noise filtered out. TensorFlow reads its environment (oneDNN, ISA caps) once,
    at import: a step that sets any passes import_now=False and calls import_tensorflow_quietly()
    after setting them."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if import_now:
        import_tensorflow_quietly()


def import_tensorflow_quietly() -> None:
    """Import TensorFlow once with file descriptor 2 captured, then replay what it printed minus
    IMPORT_NOISE. Later `import tensorflow` statements find it imported. Where it is not installed,
    nothing happens here: the step's own import says so."""
    if "tensorflow" in sys.modules:
        return
    started = time.perf_counter()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            importlib.import_module("tensorflow")
        except ImportError:
            pass
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode("utf-8", "replace").splitlines()
                    if line.strip() and not IMPORT_NOISE.search(line)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()
            TIMINGS["tensorflow_import_s"] = round(time.perf_counter() - started, 3)


def silence_tensorflow_deprecations() -> None:
    """The v1 APIs the kit relies on on purpose log deprecation notices."""
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")


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
        failed = output_failure(error, path) if isinstance(error, OSError) else None
        if failed is not None:
            raise failed from None
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


def write_deterministic_npz(path: str, arrays: Mapping[str, Any]) -> None:
    """np.savez stamps the current time into each zip entry; fix the date so bytes are reproducible."""
    import numpy as np

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


def read_json_file(path: str, what: str, fix: str) -> Any:
    try:
        with open(path, "r", encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise InsideError(f"{what} not found: {path}; {fix}") from None
    except IsADirectoryError:
        raise InsideError(f"{what} {path} is a directory, not a JSON file; {fix}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InsideError(f"{what} {path} is not readable JSON ({error}); {fix}") from None
