"""The op-library architecture check (scripts/incontainer/graph/oplibs.py): an ELF shared library's
machine read from its header, never loaded; an x86-64 .so judged on aarch64 is the named finding
op-library-wrong-architecture, before any ABI question. ELF headers crafted here."""

from __future__ import annotations

import struct
import sys

import pytest

from coldchain.contract import FAILURE_CLASSES, Code
from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))  # the container side's plain-Python modules
from incontainer.graph import oplibs  # noqa: E402

pytestmark = pytest.mark.timeout(30)

MARKER = b"coldchain-op-library:tensorflow=2.14.1;ops=ColdchainTemperature;"


def elf_header(machine: int, *, little: bool = True, elf_class: int = 2) -> bytes:
    """The 64-byte ELF header of a shared object (ET_DYN) for `machine`, then padding and the kit's marker."""
    order = "<" if little else ">"
    ident = b"\x7fELF" + bytes([elf_class, 1 if little else 2, 1]) + bytes(9)
    header = ident + struct.pack(order + "HHIQQQIHHHHHH", 3, machine, 1, 0, 64, 0, 0, 64, 56, 0, 64, 0, 0)
    return header + bytes(64) + MARKER


@pytest.mark.parametrize("machine, name", [(62, "x86_64"), (183, "aarch64"), (3, "i386"), (40, "arm")])
def test_elf_machine_reads_e_machine(machine, name):
    assert oplibs.elf_machine(elf_header(machine)) == name


def test_big_endian_headers_are_read_in_their_byte_order():
    assert oplibs.elf_machine(elf_header(22, little=False)) == "s390x"


def test_an_unknown_machine_is_named_by_its_number():
    assert oplibs.elf_machine(elf_header(9999)) == "elf-machine-9999"


@pytest.mark.parametrize("data", [b"", b"\x7fELF", b"not an elf file at all, just text......", MARKER])
def test_no_elf_no_machine(data):
    assert oplibs.elf_machine(data) is None


def test_an_x86_64_library_on_aarch64_is_the_wrong_architecture():
    assert oplibs.wrong_architecture(elf_header(62), here="aarch64") == "x86_64"


def test_the_same_machine_is_not_flagged():
    assert oplibs.wrong_architecture(elf_header(62), here="x86_64") is None
    assert oplibs.wrong_architecture(elf_header(183), here="aarch64") is None


def test_a_file_that_is_no_elf_is_left_to_the_loader():
    assert oplibs.wrong_architecture(MARKER, here="aarch64") is None


def test_load_op_library_refuses_an_x86_library_on_aarch64_before_loading(tmp_path, monkeypatch):
    """The named finding, not a crash: tf.load_op_library is never reached (no TensorFlow here)."""
    library = tmp_path / "libcoldchain_ops.so"
    library.write_bytes(elf_header(62))
    monkeypatch.setattr(oplibs.platform, "machine", lambda: "aarch64")
    monkeypatch.setitem(sys.modules, "tensorflow", object())  # load_op_library imports it first
    with pytest.raises(oplibs.OpLibraryError) as refused:
        oplibs.load_op_library(str(library))
    assert refused.value.code == Code.OP_LIBRARY_ARCH == "op-library-wrong-architecture"
    assert "compiled for x86_64 but this runtime runs on aarch64" in str(refused.value)


def test_the_architecture_class_is_more_fundamental_than_the_abi():
    # The right TensorFlow does not help a library for another machine: the diagnosis names this first.
    assert FAILURE_CLASSES.index(Code.OP_LIBRARY_ARCH) < FAILURE_CLASSES.index(Code.OP_LIBRARY_ABI)
