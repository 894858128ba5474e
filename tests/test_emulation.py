"""The emulation set-up's decisions (environments/emulation.py), from a described host state: no root,
no binfmt_misc and no qemu needed to test them. set_up against a fake binfmt_misc directory."""

from __future__ import annotations

import dataclasses

import pytest

from coldchain.config import BASES
from coldchain.contract import Exit
from coldchain.environments import emulation
from coldchain.environments.emulation import (INSTALL, MOUNT, REGISTER, HostState, handler_usable, plan)
from coldchain.errors import EmulationUnavailable

ARM64 = BASES["bookworm-arm64"]
REGISTERED_F = "enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: PF\noffset 0\n"
REGISTERED_WITHOUT_F = "enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: P\noffset 0\n"
READY = HostState(machine="x86_64", is_root=True, binfmt_supported=True, binfmt_mounted=True, handler=REGISTERED_F,
                  interpreter="/usr/bin/qemu-aarch64-static", apt=True)
BARE = HostState(machine="x86_64", is_root=True, binfmt_supported=True, binfmt_mounted=False, handler=None,
                 interpreter=None, apt=True)

pytestmark = pytest.mark.timeout(30)


def test_nothing_to_do_where_emulation_is_ready():
    assert plan(ARM64, READY) == ()


def test_nothing_to_do_on_a_native_arm64_host_even_without_root_or_binfmt():
    native = dataclasses.replace(BARE, machine="aarch64", is_root=False, binfmt_supported=False)
    assert plan(ARM64, native) == ()


def test_the_amd64_base_needs_nothing_on_an_x86_host():
    assert plan(BASES["bookworm"], dataclasses.replace(BARE, is_root=False)) == ()


def test_a_bare_host_as_root_installs_mounts_and_registers_in_that_order():
    assert plan(ARM64, BARE) == (INSTALL, MOUNT, REGISTER)


def test_a_handler_without_the_f_flag_is_registered_again():
    # Without F the kernel looks for the interpreter inside each container's own file system.
    assert plan(ARM64, dataclasses.replace(READY, handler=REGISTERED_WITHOUT_F)) == (REGISTER,)


def test_a_disabled_handler_is_registered_again():
    assert plan(ARM64, dataclasses.replace(READY, handler=REGISTERED_F.replace("enabled", "disabled"))) == (REGISTER,)


def test_an_unmounted_binfmt_misc_is_mounted_and_the_handler_registered():
    assert plan(ARM64, dataclasses.replace(READY, binfmt_mounted=False, handler=None)) == (MOUNT, REGISTER)


def test_not_root_is_refused_naming_what_is_missing_and_the_commands():
    with pytest.raises(EmulationUnavailable) as refused:
        plan(ARM64, dataclasses.replace(BARE, is_root=False))
    assert "needs root" in refused.value.message and "install, mount, register" in refused.value.message
    assert "apt-get install qemu-user-static" in refused.value.fix
    assert refused.value.exit_code == Exit.EMULATION


def test_a_kernel_without_binfmt_misc_is_refused_even_as_root():
    with pytest.raises(EmulationUnavailable, match="binfmt_misc, which this kernel does not have"):
        plan(ARM64, dataclasses.replace(BARE, binfmt_supported=False))


def test_no_apt_and_no_qemu_is_refused():
    with pytest.raises(EmulationUnavailable, match="not a Debian-family system"):
        plan(ARM64, dataclasses.replace(BARE, apt=False))


def test_only_aarch64_is_set_up_other_machines_are_left_to_the_host():
    # An amd64 image on an arm64 host, or riscv64: the kit manages no such emulation and refuses none.
    riscv = dataclasses.replace(ARM64, name="riscv", platform="linux/riscv64")
    assert plan(riscv, dataclasses.replace(BARE, is_root=False)) == ()
    assert plan(BASES["bookworm"], dataclasses.replace(BARE, machine="aarch64", is_root=False)) == ()


@pytest.mark.parametrize("machine, host", [("arm64", "aarch64"), ("aarch64", "aarch64"), ("AMD64", "x86_64"),
                                           ("x86_64", "x86_64")])
def test_the_hosts_machine_is_named_as_linux_names_it(monkeypatch, machine, host):
    monkeypatch.setattr(emulation.platform, "machine", lambda: machine)
    assert emulation.host_machine() == host
    assert emulation.emulated(ARM64) is (host != "aarch64")


@pytest.mark.parametrize("system, docker_host, elsewhere", [("Darwin", "", True), ("Linux", "tcp://build:2376", True),
                                                            ("Linux", "unix:///run/docker.sock", False),
                                                            ("Linux", "", False)])
def test_docker_desktop_or_a_remote_daemon_needs_nothing_set_up_here(monkeypatch, system, docker_host, elsewhere):
    monkeypatch.setattr(emulation.platform, "system", lambda: system)
    monkeypatch.setenv("DOCKER_HOST", docker_host)
    assert emulation.daemon_elsewhere() is elsewhere
    if elsewhere:  # not root, no binfmt_misc: still nothing refused
        monkeypatch.setattr(emulation, "host_state", lambda binfmt: dataclasses.replace(BARE, is_root=False))
        assert emulation.set_up(ARM64) == ()


@pytest.mark.parametrize("text, usable", [(REGISTERED_F, True), (REGISTERED_WITHOUT_F, False), (None, False),
                                          ("disabled\nflags: F\n", False), ("", False)])
def test_handler_usable(text, usable):
    assert handler_usable(text) is usable


def test_set_up_registers_with_f_and_says_what_it_did(tmp_path, monkeypatch, caplog):
    """Against a fake binfmt_misc directory: an old registration without F is removed ("-1" written to
    it), and the line written to `register` carries the aarch64 magic and F."""
    (tmp_path / "register").write_text("")
    (tmp_path / "qemu-aarch64").write_text(REGISTERED_WITHOUT_F)

    def fake_state(binfmt):
        registered = (binfmt / "register").read_text().endswith(":F")
        return dataclasses.replace(READY, handler=REGISTERED_F if registered else REGISTERED_WITHOUT_F)

    monkeypatch.setattr(emulation, "daemon_elsewhere", lambda: False)
    monkeypatch.setattr(emulation, "host_machine", lambda: "x86_64")
    monkeypatch.setattr(emulation, "host_state", fake_state)
    monkeypatch.setattr(emulation, "_interpreter", lambda: "/usr/bin/qemu-aarch64-static")
    caplog.set_level("INFO")
    assert emulation.set_up(ARM64, tmp_path) == (REGISTER,)
    assert (tmp_path / "qemu-aarch64").read_text() == "-1"
    line = (tmp_path / "register").read_text()
    assert line.startswith(":qemu-aarch64:M:0:\\x7fELF\\x02") and line.endswith(":/usr/bin/qemu-aarch64-static:F")
    assert "registering qemu-aarch64 with the F flag" in caplog.text


def test_set_up_refuses_when_the_handler_still_lacks_f_afterwards(tmp_path, monkeypatch):
    monkeypatch.setattr(emulation, "daemon_elsewhere", lambda: False)
    monkeypatch.setattr(emulation, "host_machine", lambda: "x86_64")
    monkeypatch.setattr(emulation, "host_state", lambda binfmt: dataclasses.replace(READY, handler=None))
    monkeypatch.setattr(emulation, "_register", lambda binfmt: None)
    with pytest.raises(EmulationUnavailable, match="still not enabled with the F flag"):
        emulation.set_up(ARM64, tmp_path)
