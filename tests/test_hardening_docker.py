"""The sandbox, read from inside a real step container (not from the arguments the host passed): no
capabilities, no_new_privs, a read-only root and model mount, loopback only, the cgroup's memory and
pids limits, the unprivileged user. And a container that hangs is killed at its time limit."""

from __future__ import annotations

import os
import time

import pytest

from coldchain.contract import MOUNT_MODEL, MOUNT_OUT
from coldchain.engine import Mount, RunSpec
from coldchain.steps.runner import CONTAINER_USER, Image, ModuleRun, last_json, run_module

pytestmark = pytest.mark.docker


def test_a_step_container_is_sandboxed_as_promised(docker_engine, kit_images, tiny_chain, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)  # mkdir's mode is cut by the umask
    run = ModuleRun(image=Image.of(kit_images["infer"]), module="sandbox", arguments=(MOUNT_MODEL, MOUNT_OUT),
                    inputs={MOUNT_MODEL: tiny_chain / "model"}, output=Mount(out, MOUNT_OUT, read_only=False),
                    memory="768m", what="sandbox report")
    report = last_json(run_module(docker_engine, run), run)
    assert report["cap_effective"] == "0000000000000000" and report["cap_permitted"] == "0000000000000000"
    # A non-root process has no effective or permitted capabilities with or without cap_drop; the bounding
    # set is what cap_drop=ALL empties (Docker's default leaves 14 capabilities there).
    assert report["cap_bounding"] == "0000000000000000"
    assert report["no_new_privs"] == "1"
    assert report["mounts"]["/"]["read_only"] and not report["root_writable"]
    assert report["mounts"][MOUNT_MODEL]["read_only"] and report["mounts"][MOUNT_MODEL]["mount"] == MOUNT_MODEL
    assert not report["mounts"][MOUNT_OUT]["read_only"], "the one writable mount is the output"
    assert report["network_interfaces"] == ["lo"]
    assert report["memory_limit"] == str(768 * 2**20)
    assert report["pids_limit"] == "512"
    expected_user = CONTAINER_USER if os.geteuid() == 0 else f"{os.getuid()}:{os.getgid()}"
    assert f"{report['uid']}:{report['gid']}" == expected_user and report["uid"] != 0


def test_a_hung_container_is_killed_at_its_time_limit(docker_engine, kit_images):
    started = time.monotonic()
    result = docker_engine.run(RunSpec(image=kit_images["infer"].info.id, command=("sleep", "300"), timeout_s=3,
                                       labels={"io.coldchain.kit": "coldchain"}))
    assert result.timed_out and result.exit_code != 0
    assert time.monotonic() - started < 120
