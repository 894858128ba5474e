"""Hostile inputs refused before they are read: only regular files, no link out of the directory a file
belongs to, no `..` or absolute names in a manifest, bounded reads, `.npy` headers checked before any
array is allocated. Standard library only: the host loads this same file by path (coldchain/confine.py),
as it loads the contract, and it must run on every Python the drift matrix covers (3.9+).
"""
from __future__ import annotations

import ast
import errno
import io
import os
import stat
import struct
import zipfile
from typing import Dict, Iterable, List, Optional, Tuple

# Bounded reads: the most bytes each kind of file may hold. A model past protobuf's 2 GiB cannot be
# parsed anyway; the rest are text or small arrays, so a few MB is already generous.
LIMITS = {
    "model": 4 * 2**30,
    "manifest": 16 * 2**20,
    "labels": 16 * 2**20,
    "golden": 1 * 2**30,  # golden.npz as stored, and the arrays it unpacks to
    "image": 256 * 2**20,
    "environment": 16 * 2**20,  # a lock and its requirements source
    "op-library": 1 * 2**30,
}
NPY_MAGIC = b"\x93NUMPY"
NPY_HEADER_LIMIT = 65536  # numpy itself refuses longer headers (format._MAX_HEADER_SIZE is 10000)


class Refused(Exception):
    """A hostile or malformed input, refused before it was read; the message names the file and the fix."""

    def __init__(self, path: str, problem: str, fix: str):
        super().__init__(f"{path}: {problem}; {fix}")
        self.path = path


def inside(root: str, path: str) -> bool:
    """Whether `path`, every link followed, stays within `root` (also resolved)."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def plain_name(name: object, where: str, source: str) -> str:
    """A file name a manifest gives, relative to its directory: no absolute path, no `..`."""
    fix = f"restore {source} as it was written (names are relative to the model directory)"
    if not isinstance(name, str) or not name or "\x00" in name:
        raise Refused(source, f"{where} {name!r} is not a file name", fix)
    if os.path.isabs(name) or name.startswith("~"):
        raise Refused(source, f"{where} {name!r} is an absolute path, outside the model directory", fix)
    if ".." in name.replace("\\", "/").split("/"):
        raise Refused(source, f"{where} {name!r} climbs out of the model directory with '..'", fix)
    return name


def regular_file(path: str, kind: str, root: Optional[str] = None) -> os.stat_result:
    """The file's stat, once it is known to be a regular file (not a device, FIFO or socket) no larger
    than its kind's limit, reached without a link out of `root`. A missing file is the caller's to name."""
    info = os.stat(path)  # FileNotFoundError passes on: each caller names a missing file its own way
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        raise Refused(path, f"is not a regular file (a device, FIFO or socket{_target(path)})",
                      f"replace it with the {kind} file itself")
    if root is not None and not inside(root, path):
        raise Refused(path, f"is a link to {os.path.realpath(path)}, outside {root}",
                      "copy the file itself into the directory instead of linking to it")
    if stat.S_ISDIR(info.st_mode):
        return info
    if info.st_size > LIMITS[kind]:
        raise Refused(path, f"is {info.st_size} bytes, over the {LIMITS[kind]} a {kind} file may hold",
                      f"pass the right {kind} file")
    return info


def _target(path: str) -> str:
    return f": it leads to {os.path.realpath(path)}" if os.path.islink(path) else ""


def read_bounded(path: str, kind: str, root: Optional[str] = None) -> bytes:
    """The file's bytes, at most its kind's limit, from a regular file only: `model.pb -> /dev/zero`
    is refused, not read forever. Opened without blocking, so a FIFO cannot hang the open itself."""
    if stat.S_ISDIR(regular_file(path, kind, root).st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):  # swapped between the check and the open
            raise Refused(path, "is not a regular file", f"replace it with the {kind} file itself")
        data = handle.read(LIMITS[kind] + 1)
    if len(data) > LIMITS[kind]:
        raise Refused(path, f"holds more than the {LIMITS[kind]} bytes a {kind} file may",
                      f"pass the right {kind} file")
    return data


def check_tree(root: str, kind: str = "model") -> None:
    """Every entry of a directory (recursively) a regular file or folder whose links stay inside it."""
    for directory, folders, files in os.walk(root):
        for name in sorted(folders) + sorted(files):
            path = os.path.join(directory, name)
            info = os.stat(path) if os.path.exists(path) else None
            if info is not None and not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
                raise Refused(path, f"is not a regular file (a device, FIFO or socket{_target(path)})",
                              f"remove it from {root}")
            if not inside(root, path):
                raise Refused(path, f"is a link to {os.path.realpath(path)}, outside {root}",
                              "copy the file itself into the directory instead of linking to it")
        folders[:] = [name for name in folders if not os.path.islink(os.path.join(directory, name))]


# --- .npy headers inside golden.npz, read before any array is allocated ----------------------------
def npy_header(handle, path: str) -> Tuple[str, Tuple[int, ...], int]:
    """(descr, shape, header bytes) of one .npy stream, parsed as numpy's read_array_header_* do
    (a Python literal, never evaluated code), so a hostile count is seen before np.load allocates it."""
    fix = "copy the model directory again (or re-run freeze / adopt)"
    head = handle.read(len(NPY_MAGIC) + 2)
    if head[:len(NPY_MAGIC)] != NPY_MAGIC or len(head) < len(NPY_MAGIC) + 2:
        raise Refused(path, "is not a .npy array", fix)
    major = head[-2]
    width = 2 if major == 1 else 4
    length = struct.unpack("<H" if width == 2 else "<I", handle.read(width))[0]
    if length > NPY_HEADER_LIMIT:
        raise Refused(path, f"has a {length}-byte .npy header", fix)
    try:
        header = ast.literal_eval(handle.read(length).decode("latin1" if major < 3 else "utf-8"))
        descr, shape = header["descr"], tuple(header["shape"])
    except (ValueError, SyntaxError, KeyError, TypeError, UnicodeDecodeError, MemoryError, RecursionError):
        raise Refused(path, "has an unreadable .npy header", fix) from None
    if not isinstance(descr, str) or not all(isinstance(size, int) and size >= 0 for size in shape):
        raise Refused(path, f"has a .npy header with dtype {descr!r} and shape {shape!r}: no plain array", fix)
    return descr, shape, len(NPY_MAGIC) + 2 + width + length


def itemsize(descr: str) -> int:
    """Bytes per element of a plain numpy type string ('<f4' -> 4, '|u1' -> 1); object arrays refused."""
    body = descr.lstrip("<>|=")
    if body[:1] not in tuple("biufcSUV") or not body[1:].isdigit():
        raise ValueError(descr)
    return int(body[1:]) * (4 if body[0] == "U" else 1)


def check_npz(data: bytes, path: str, expected: Dict[str, Tuple[Optional[list], Optional[str]]]) -> None:
    """Every array in an .npz, by its header alone: a plain dtype, a size its member really holds, the
    whole within the golden limit, and the shape and dtype the manifest records where it records them."""
    fix = "copy the model directory again (or re-run freeze / adopt)"
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        raise Refused(path, f"is not an .npz archive ({error})", fix) from None
    if sum(member.file_size for member in members) > LIMITS["golden"]:
        raise Refused(path, f"unpacks to more than the {LIMITS['golden']} bytes a golden file may", fix)
    for member in members:
        key = member.filename[:-4] if member.filename.endswith(".npy") else member.filename
        where = f"{path} (array {key!r})"
        with archive.open(member) as handle:
            descr, shape, header = npy_header(handle, where)
        try:
            size = itemsize(descr)
        except ValueError:
            raise Refused(where, f"has dtype {descr!r}, not a plain numeric array", fix) from None
        count = 1
        for dimension in shape:
            count *= dimension
        if count * size > member.file_size - header:
            raise Refused(where, f"claims shape {list(shape)} ({count} elements), more than its "
                                 f"{member.file_size} bytes hold", fix)
        _check_recorded(where, shape, descr, expected.get(key), fix)


def _check_recorded(where: str, shape: tuple, descr: str, recorded, fix: str) -> None:
    if recorded is None:
        return
    want_shape, want_dtype = recorded
    if isinstance(want_shape, list) and (len(want_shape) != len(shape) or any(
            isinstance(want, int) and want != got for want, got in zip(want_shape, shape))):
        raise Refused(where, f"has shape {list(shape)}, the manifest records {want_shape}", fix)
    if isinstance(want_dtype, str) and _dtype_name(descr) not in (want_dtype, None):
        raise Refused(where, f"has dtype {descr!r}, the manifest records {want_dtype}", fix)


def _dtype_name(descr: str) -> Optional[str]:
    kinds = {"f": "float", "i": "int", "u": "uint"}
    body = descr.lstrip("<>|=")
    kind = kinds.get(body[:1])
    return f"{kind}{int(body[1:]) * 8}" if kind and body[1:].isdigit() else None


def recorded_shapes(manifest: dict) -> Dict[str, Tuple[Optional[list], Optional[str]]]:
    """What the manifest says each golden array is: its golden tensors' shapes and dtypes, and the
    input's trailing dimensions (its batch left open)."""
    golden = manifest.get("golden") or {}
    found: Dict[str, Tuple[Optional[list], Optional[str]]] = {}
    for entry in golden.get("tensors") or []:
        if isinstance(entry, dict) and isinstance(entry.get("key"), str):
            found[entry["key"]] = (entry.get("shape"), entry.get("dtype"))
    inputs = manifest.get("inputs") or []
    first = inputs[0] if inputs and isinstance(inputs[0], dict) else {}
    if isinstance(golden.get("input_key"), str) and isinstance(first.get("shape"), list):
        # Its shape only: the input's dtype as stored is the golden's own choice.
        found.setdefault(golden["input_key"], ([None] + list(first["shape"][1:]), None))
    return found


# --- labels ------------------------------------------------------------------------------------------
def label_ids(lines: Iterable[str], path: str, classes: Optional[int]) -> List[Tuple[int, str]]:
    """slim's `id:name` lines as (id, name), every id below the class count (or the line count, when
    the count is not known yet: a complete file names every id from 0), so `999999999:x` never
    becomes a billion-entry list."""
    lines = list(lines)
    bound = classes if classes is not None else len(lines)
    pairs = []
    for line in lines:
        key, name = line.split(":", 1)
        index = int(key)
        if index >= bound:
            what = f"the model's {classes} classes" if classes is not None else f"the file's {len(lines)} lines"
            raise Refused(path, f"names class id {index}, past {what}",
                          "list one name per class id, from 0 (slim's id:name), for this model's classes")
        pairs.append((index, name.strip()))
    return pairs
