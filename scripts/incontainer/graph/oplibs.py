"""Custom-op libraries: what they provide and which TensorFlow they were compiled against, read
from the file without loading it, and loading them with errors that name the real cause.

TensorFlow has no stable C++ ABI: a library compiled against one release usually fails to load in
another with `undefined symbol: _ZN3tsl...`. coldchain's libraries embed a marker string,
`coldchain-op-library:tensorflow=X.Y.Z;ops=A,B;`, so the version is known before dlopen.
"""
from __future__ import annotations

import hashlib
import platform
import re
from typing import Optional

from ..common import InsideError
from ..contract import Code, Exit

MARKER_RE = re.compile(rb"coldchain-op-library:tensorflow=([0-9A-Za-z.\-+]+);ops=([A-Za-z0-9_,]*);")


class OpLibraryError(InsideError):
    """A library that cannot be loaded here; `code` is the diagnosis class."""

    exit_code = Exit.MODEL_BLOCKED


def read_marker(data: bytes) -> Optional[dict]:
    match = MARKER_RE.search(data)
    if not match:
        return None
    return {"tensorflow": match.group(1).decode(), "ops": [op for op in match.group(2).decode().split(",") if op]}


def describe_library(data: bytes) -> dict:
    marker = read_marker(data) or {}
    return {"sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data),
            "compiled_against_tensorflow": marker.get("tensorflow"), "ops": marker.get("ops", [])}


# ELF e_machine -> uname -m (the ELF specification's numbers).
ELF_MACHINES = {3: "i386", 40: "arm", 62: "x86_64", 183: "aarch64", 243: "riscv64", 21: "ppc64le", 22: "s390x"}


def elf_machine(data: bytes) -> Optional[str]:
    """The machine an ELF shared library is for, from its header alone (never loaded); None where the
    bytes are no ELF file. e_machine is the 16-bit field at offset 18, in the byte order EI_DATA names."""
    if len(data) < 20 or data[:4] != b"\x7fELF":
        return None
    number = int.from_bytes(data[18:20], "little" if data[5] == 1 else "big")
    return ELF_MACHINES.get(number, f"elf-machine-{number}")


def wrong_architecture(data: bytes, here: Optional[str] = None) -> Optional[str]:
    """The library's machine where it is not this one's (an x86-64 .so in an aarch64 container): no
    loader maps it, whatever TensorFlow it was compiled against. None where it matches or is no ELF."""
    here = here or platform.machine()
    machine = elf_machine(data)
    return machine if machine is not None and machine != here else None


def architecture_message(name: str, machine: str) -> str:
    return (f"op library {name} is compiled for {machine} but this runtime runs on {platform.machine()}: a shared "
            f"library loads only on the machine it was compiled for; build it for {platform.machine()} (in "
            f"an image of this platform) and ship that beside the model")


def minor_version(version: str) -> str:
    return ".".join(version.split(".")[:2])


def abi_compatible(compiled_against: Optional[str], runtime: str) -> Optional[bool]:
    """Same major.minor: TF keeps its C++ symbols stable within a minor release line only. None when
    the library does not say which TensorFlow it was built for: only loading it can tell."""
    if compiled_against is None:
        return None
    return minor_version(compiled_against) == minor_version(runtime)


def load_op_library(path: str):
    """tf.load_op_library, with its failure turned into a diagnosis naming the cause and the fix."""
    import tensorflow as tf

    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise OpLibraryError(f"op library not found: {path}; ship it beside the model (ops/) or fix the path",
                             Code.OP_LIBRARY_MISSING) from None
    marker = read_marker(data) or {}
    compiled = marker.get("tensorflow")
    machine = wrong_architecture(data)
    if machine is not None:  # dlopen would say only "wrong ELF class" or "cannot open shared object"
        raise OpLibraryError(architecture_message(path, machine), Code.OP_LIBRARY_ARCH)
    try:
        return tf.load_op_library(path)
    except (tf.errors.NotFoundError, OSError) as error:
        text = str(error)
        symbol = re.search(r"undefined symbol: (\S+)", text)
        if symbol or (compiled and abi_compatible(compiled, tf.__version__) is False):
            built = f"compiled against TensorFlow {compiled}" if compiled else "compiled against another TensorFlow"
            raise OpLibraryError(
                f"op library {path} is {built} but this runtime is TensorFlow {tf.__version__}: C++ ABI mismatch"
                + (f" (missing symbol {symbol.group(1)[:80]})" if symbol else "")
                + f"; rebuild the library against TensorFlow {tf.__version__}'s headers, or run inference "
                  f"with TensorFlow {minor_version(compiled) if compiled else 'the version it was built for'}",
                Code.OP_LIBRARY_ABI) from None
        raise OpLibraryError(f"op library {path} failed to load: {text.splitlines()[0][:300]}; check it is a "
                             "TensorFlow op library for this platform", Code.OP_LIBRARY_LOAD) from None
