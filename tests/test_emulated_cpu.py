"""Drift cases run as another x86-64 CPU model (emulate_cpu) without a daemon: the matrix setting and its
refusals, a container of their own, the command that runs Python under the host's qemu, the CPU flags
the container reports for the model it was given, and a host that cannot emulate."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from coldchain.contract import ENV_EMULATED_CPU, MODULES, MOUNT_EMULATOR, VENV_PYTHON
from coldchain.drift.probe import group_cases
from coldchain.environments import emulation
from coldchain.environments.matrix import load_matrix
from coldchain.errors import EmulationUnavailable, UsageError
from coldchain.steps.runner import Image, ModuleRun, spec_for
from conftest import ROOT
from test_drift import ROOT_MATRIX, write

MATRIX = """
schema = 1
reference_env = "runtimes"
[envs.runtimes]
lock = "bench"
[envs.edge]
lock = "drift-arm64"
[[cases]]
name = "native"
env = "runtimes"
runtime = "openvino"
precision = "int8"
expect = "pass"
[[cases]]
name = "avx2"
env = "runtimes"
runtime = "openvino"
precision = "int8"
emulate_cpu = "Haswell-v4"
expect = "pass"
"""


def test_an_emulated_case_gets_its_cpu_model_and_a_container_of_its_own(tmp_path):
    matrix = load_matrix(write(tmp_path, MATRIX))
    native, avx2 = matrix.cases
    assert (native.settings.emulate_cpu, avx2.settings.emulate_cpu) == (None, "Haswell-v4")
    assert [[case.name for case in group] for group in group_cases(matrix.cases)] == [["native"], ["avx2"]]
    assert native.settings.per_run_target == avx2.settings.per_run_target  # one artefact, converted once


def test_an_unknown_cpu_model_is_refused_with_the_known_ones(tmp_path):
    with pytest.raises(UsageError, match="Haswell-v4") as refused:
        load_matrix(write(tmp_path, MATRIX.replace('emulate_cpu = "Haswell-v4"', 'emulate_cpu = "Haswel"')))
    assert "emulate_cpu" in refused.value.message


def test_emulating_an_x86_cpu_model_in_an_arm64_environment_is_refused(tmp_path):
    with pytest.raises(UsageError, match="linux/arm64"):
        load_matrix(write(tmp_path, MATRIX.replace('env = "runtimes"\nruntime = "openvino"\nprecision = "int8"\n'
                                                   'emulate_cpu', 'env = "edge"\nruntime = "openvino"\n'
                                                                  'precision = "int8"\nemulate_cpu')))


def test_the_shipped_matrix_runs_both_int8_artefacts_as_an_avx2_cpu():
    cases = {case.name: case for case in load_matrix(ROOT_MATRIX).cases}
    for name in ("openvino-int8", "onnxruntime-int8"):
        emulated = cases[f"{name}-avx2"]
        assert emulated.settings.emulate_cpu == "Haswell-v4" and emulated.expect == "pass"
        assert emulated.settings.per_run_target == cases[name].settings.per_run_target
        assert (emulated.env, emulated.variant) == (cases[name].env, cases[name].variant)


def test_python_runs_under_the_mounted_qemu_as_the_cpu_model():
    image = Image("sha256:abc", "t-bench:cpu", {})
    qemu = Path("/usr/bin/qemu-x86_64-static")
    spec = spec_for(ModuleRun(image=image, module="probe", arguments=("--plan", "[]"), emulator=(qemu, "Haswell-v4")))
    assert spec.command == (MOUNT_EMULATOR, "-cpu", "Haswell-v4", VENV_PYTHON, "-m", MODULES["probe"], "--plan", "[]")
    mount = next(mount for mount in spec.mounts if mount.target == MOUNT_EMULATOR)
    assert mount.source == qemu and mount.read_only
    assert spec.environment[ENV_EMULATED_CPU] == "Haswell-v4"
    plain = spec_for(ModuleRun(image=image, module="probe"))
    assert plain.command[0] == "python" and ENV_EMULATED_CPU not in plain.environment


def test_the_container_reports_the_emulated_models_flags_not_the_hosts(monkeypatch):
    sys.path.insert(0, str(ROOT / "scripts"))
    from incontainer import runtime

    monkeypatch.setenv(ENV_EMULATED_CPU, "Haswell-v4")
    assert runtime.cpu_flags() == ["avx", "avx2", "fma"]
    monkeypatch.delenv(ENV_EMULATED_CPU)
    assert runtime.cpu_flags() != ["avx", "avx2", "fma"] or not Path("/proc/cpuinfo").exists()


def test_an_x86_cpu_model_needs_an_x86_host(monkeypatch):
    monkeypatch.setattr(emulation, "host_machine", lambda: "aarch64")
    with pytest.raises(EmulationUnavailable, match="needs an x86-64 host"):
        emulation.x86_emulator("Haswell-v4")


def test_without_qemu_and_without_root_the_fix_is_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(emulation, "host_machine", lambda: "x86_64")
    monkeypatch.setattr(emulation, "daemon_elsewhere", lambda: False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(EmulationUnavailable) as refused:
        emulation.x86_emulator("Haswell-v4", tmp_path / "qemu-x86_64-static")
    assert "apt-get install qemu-user-static" in refused.value.fix


def test_a_present_qemu_is_used_as_it_is(monkeypatch, tmp_path):
    monkeypatch.setattr(emulation, "host_machine", lambda: "x86_64")
    monkeypatch.setattr(emulation, "daemon_elsewhere", lambda: False)
    qemu = tmp_path / "qemu-x86_64-static"
    qemu.write_text("#!/bin/sh\n")
    qemu.chmod(0o755)
    monkeypatch.setattr(emulation, "_run", lambda *args: pytest.fail("nothing to install"))
    assert emulation.x86_emulator("Haswell-v4", qemu) == qemu


def test_a_host_that_cannot_emulate_reports_the_cases_not_applicable(tmp_path, monkeypatch):
    from coldchain.drift import runner
    from coldchain.engine import ImageInfo
    from coldchain.environments.images import BuiltImage
    from fake_engine import FakeEngine

    matrix = load_matrix(write(tmp_path, MATRIX))
    avx2 = [case for case in matrix.cases if case.name == "avx2"]
    refusal = EmulationUnavailable("emulating the x86-64 CPU model Haswell-v4 needs /usr/bin/qemu-x86_64-static",
                                   fix="install it once: sudo apt-get install qemu-user-static")
    monkeypatch.setattr(runner, "emulator_for", lambda case: (_ for _ in ()).throw(refusal))
    engine = FakeEngine()
    image = BuiltImage(None, "t-bench:cpu", ImageInfo("sha256:abc", ("t-bench:cpu",), {}, 1), None, reused=True)
    (result,) = runner.run_group(engine, None, avx2, matrix.envs["runtimes"], image, {"default": tmp_path}, None,
                                 {("runtimes", "default"): tmp_path})
    assert result.ok and result.outcome == "not-applicable" and engine.runs == []
    assert "qemu-user-static" in result.reasons[0] and "this host" in result.reasons[0]


def test_the_reports_numerics_line_says_the_cpu_was_emulated():
    from coldchain.contract import describe_numerics

    numerics = {"tensorflow": "2.14.1", "onednn": {"enabled": False, "decided_by": "cpu: none"},
                "threads_effective": [2, 2]}
    assert "emulated" not in describe_numerics(numerics)
    assert describe_numerics({**numerics, "emulated_cpu": "Haswell-v4"}).endswith("emulated CPU Haswell-v4 (qemu)")
