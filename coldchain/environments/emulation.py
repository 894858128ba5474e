"""Running another machine's images here: qemu user emulation through binfmt_misc.

An arm64 container on an x86-64 host runs when the kernel hands every aarch64 ELF to a static qemu.
That needs three things, each a root action: qemu-user-static installed, binfmt_misc mounted, and
the aarch64 handler registered with the F flag (the kernel opens the interpreter when registering,
so it works inside containers, whose file system has no qemu). What to do is decided from the host's
state alone (plan), so the decisions are tested without root; set_up carries them out.

Another x86-64 CPU model (an AVX2-only one on an AMX host) is emulated without binfmt: x86_emulator
gives the static qemu-x86_64 that a drift case's container mounts and starts its Python with.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from ..config import BaseSpec
from ..errors import EmulationUnavailable

log = logging.getLogger(__name__)

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
HANDLER = "qemu-aarch64"
QEMU_PACKAGE = "qemu-user-static"
INTERPRETER_CANDIDATES = ("/usr/bin/qemu-aarch64-static", "/usr/libexec/qemu-binfmt/aarch64-binfmt-P")
# The ELF header of any aarch64 executable (e_ident, e_type masked to EXEC/DYN, e_machine 183), as
# Debian's qemu-user-static registers it.
AARCH64_MAGIC = r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00"
AARCH64_MASK = r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"

INSTALL, MOUNT, REGISTER = "install", "mount", "register"


@dataclass(frozen=True)
class HostState:
    machine: str  # uname -m
    is_root: bool
    binfmt_supported: bool  # the kernel knows binfmt_misc (/proc/filesystems)
    binfmt_mounted: bool
    handler: str | None  # /proc/sys/fs/binfmt_misc/qemu-aarch64, where registered
    interpreter: str | None  # a static qemu-aarch64 on this host
    apt: bool


def handler_usable(text: str | None) -> bool:
    """Enabled, and with F: without it the kernel looks for the interpreter inside each container."""
    if not text:
        return False
    lines = [line.strip() for line in text.splitlines()]
    flags = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("flags:")), "")
    return "enabled" in lines and "F" in flags


def plan(target: BaseSpec, state: HostState) -> tuple[str, ...]:
    """The root actions that make `target`'s binaries run here, in order; () where nothing is missing.
    Raises EmulationUnavailable, naming what is missing and how to get it, where this host cannot."""
    if target.machine == state.machine or target.machine != "aarch64":
        return ()  # the kit sets up aarch64 only; another emulation, where present, is the host's own
    actions = []
    if state.interpreter is None:
        actions.append(INSTALL)
    if not state.binfmt_mounted:
        if not state.binfmt_supported:
            raise EmulationUnavailable(f"{target.name} ({target.platform}) needs binfmt_misc, which this kernel "
                                       "does not have", fix="use a kernel with CONFIG_BINFMT_MISC, or a real "
                                                            "arm64 machine (the same image runs there natively)")
        actions.append(MOUNT)
    if INSTALL in actions or not handler_usable(state.handler):
        actions.append(REGISTER)
    if not actions:
        return ()
    if not state.is_root:
        raise EmulationUnavailable(f"{target.name} ({target.platform}) runs here only under qemu emulation, and "
                                   f"setting it up ({', '.join(actions)}) needs root",
                                   fix=f"rerun as root once (sudo), or run: sudo apt-get install {QEMU_PACKAGE} "
                                       f"&& sudo update-binfmts --enable {HANDLER} (Docker Desktop has it built in)")
    if INSTALL in actions and not state.apt:
        raise EmulationUnavailable(f"{target.name} ({target.platform}) needs a static qemu-aarch64 and this is "
                                   "not a Debian-family system", fix=f"install your OS's {QEMU_PACKAGE}, then rerun")
    return tuple(actions)


def _interpreter() -> str | None:
    return next((path for path in INTERPRETER_CANDIDATES if os.access(path, os.X_OK)), None)


def host_state(binfmt: Path = BINFMT_DIR) -> HostState:
    try:
        supported = "binfmt_misc" in Path("/proc/filesystems").read_text()
    except OSError:
        supported = False
    handler_file = binfmt / HANDLER
    try:
        handler = handler_file.read_text()
    except OSError:
        handler = None
    return HostState(machine=host_machine(), is_root=os.geteuid() == 0, binfmt_supported=supported,
                     binfmt_mounted=(binfmt / "register").exists(), handler=handler,
                     interpreter=_interpreter(), apt=shutil.which("apt-get") is not None)


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False, shell=False,
                            env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    if result.returncode != 0:
        raise EmulationUnavailable(f"setting up emulation: {what} failed (exit {result.returncode})",
                                   log_tail="\n".join((result.stdout + result.stderr).strip().splitlines()[-15:]),
                                   fix="read the log tail; or set it up by hand: apt-get install "
                                       f"{QEMU_PACKAGE} && update-binfmts --enable {HANDLER}")


def _register(binfmt: Path) -> None:
    existing = binfmt / HANDLER
    if existing.exists():
        existing.write_text("-1")  # a registration without F cannot be amended, only replaced
    interpreter = _interpreter()
    if interpreter is None:
        raise EmulationUnavailable(f"{QEMU_PACKAGE} is installed but no static qemu-aarch64 is at "
                                   f"{' or '.join(INTERPRETER_CANDIDATES)}", fix=f"reinstall {QEMU_PACKAGE}")
    (binfmt / "register").write_text(f":{HANDLER}:M:0:{AARCH64_MAGIC}:{AARCH64_MASK}:{interpreter}:F")


def host_machine() -> str:
    """uname -m, with macOS's and Windows' names for the same machines."""
    machine = platform.machine()
    return {"arm64": "aarch64", "AMD64": "x86_64", "amd64": "x86_64"}.get(machine, machine)


def daemon_elsewhere() -> bool:
    """Docker Desktop (its own VM emulates) or a remote daemon: this kernel's binfmt_misc is not the
    one that runs the containers, so there is nothing to set up here."""
    remote = os.environ.get("DOCKER_HOST", "")
    return platform.system() != "Linux" or bool(remote and not remote.startswith("unix://"))


def set_up(target: BaseSpec, binfmt: Path = BINFMT_DIR) -> tuple[str, ...]:
    """Make `target`'s binaries run on this host; what it did, each step logged as it is done."""
    if not emulated(target) or daemon_elsewhere():
        return ()
    actions = plan(target, host_state(binfmt))
    for action in actions:
        if action == INSTALL:
            log.info("emulation: installing %s (runs %s binaries on this %s host)", QEMU_PACKAGE, target.machine,
                     platform.machine())
            _run(["apt-get", "update", "-qq"], "apt-get update")
            _run(["apt-get", "install", "-y", "-qq", QEMU_PACKAGE], f"apt-get install {QEMU_PACKAGE}")
        elif action == MOUNT:
            log.info("emulation: mounting binfmt_misc at %s", binfmt)
            _run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)], "mounting binfmt_misc")
        elif action == REGISTER and not handler_usable(host_state(binfmt).handler):  # installing may register it
            log.info("emulation: registering %s with the F flag", HANDLER)
            _register(binfmt)
    if actions and not handler_usable(host_state(binfmt).handler):
        raise EmulationUnavailable(f"{binfmt / HANDLER} is still not enabled with the F flag after setting up",
                                   fix=f"check 'cat {binfmt / HANDLER}'; update-binfmts --enable {HANDLER}")
    if emulated(target):
        log.info("%s (%s) runs here under qemu emulation: slow, and its speeds are not %s speeds",
                 target.name, target.platform, target.machine)
    return actions


def emulated(target: BaseSpec) -> bool:
    return target.machine != host_machine()


X86_EMULATOR = Path("/usr/bin/qemu-x86_64-static")
_INSTALLING = threading.Lock()  # drift groups run in threads: one apt-get at a time


def x86_emulator(cpu: str, path: Path = X86_EMULATOR) -> Path:
    """The static qemu-x86_64 that runs a container's Python as another x86-64 CPU model (`cpu`): mounted
    into the container and named in its command, not registered (binfmt for the host's own machine
    would take over every program). Installed as root where missing; refused where it cannot be."""
    if host_machine() != "x86_64":
        raise EmulationUnavailable(f"emulating the x86-64 CPU model {cpu} needs an x86-64 host, this one is "
                                   f"{host_machine()}", fix="run the case on an x86-64 machine, or select the others "
                                                            "(drift-test --case NAME)")
    if daemon_elsewhere():
        raise EmulationUnavailable(f"emulating {cpu} mounts this host's qemu into the container, and the Docker "
                                   "daemon runs elsewhere (DOCKER_HOST or Docker Desktop)",
                                   fix="run the case where the daemon runs, or select the others (drift-test "
                                       "--case NAME)")
    with _INSTALLING:
        return _installed(cpu, path)


def _installed(cpu: str, path: Path) -> Path:
    if not os.access(path, os.X_OK):
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise EmulationUnavailable(f"emulating the x86-64 CPU model {cpu} needs {path}",
                                       fix=f"install it once: sudo apt-get install {QEMU_PACKAGE}")
        log.info("emulation: installing %s (runs a case as the x86-64 CPU model %s)", QEMU_PACKAGE, cpu)
        _run(["apt-get", "update", "-qq"], "apt-get update")
        _run(["apt-get", "install", "-y", "-qq", QEMU_PACKAGE], f"apt-get install {QEMU_PACKAGE}")
        if not os.access(path, os.X_OK):
            raise EmulationUnavailable(f"{QEMU_PACKAGE} is installed but {path} is not there",
                                       fix=f"reinstall {QEMU_PACKAGE}")
    return path
