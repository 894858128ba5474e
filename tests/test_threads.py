"""Inference threads: a setting measured on one machine is applied only on a like one (cores, CPU class,
numerics flags), TensorFlow's own choice elsewhere, the user's --threads over both; freeze records
where the setting was measured, infer passes its choice to the container and states it and its source."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from coldchain import contract
from coldchain.cli import main
from coldchain.config import Project
from coldchain.steps.threads import (SOURCE_DEFAULT, SOURCE_MEASURED, SOURCE_USER, Machine, choose_threads,
                                     freeze_arguments, manifest_inference, measured_threads)
from test_infer import engine, model, pictures, project  # noqa: F401 - the fixtures infer's tests use

BENCH_HOST = Machine(2, "avx512-vnni", ("avx", "avx2", "fma", "avx512f", "avx512_vnni"))
MEASURED = {"intra_op_threads": 2, "inter_op_threads": 1, "measured_on": BENCH_HOST.to_dict()}


def test_the_measured_setting_applies_on_a_machine_like_the_one_that_measured_it():
    here = Machine(2, "avx512-vnni", ("avx512_vnni", "avx512f", "fma", "avx2", "avx"))  # flag order does not matter
    chosen = choose_threads(MEASURED, here)
    assert (chosen.intra, chosen.inter, chosen.source) == (2, 1, SOURCE_MEASURED)
    assert chosen.to_dict()["measured_on"] == BENCH_HOST.to_dict()


@pytest.mark.parametrize("here", [
    Machine(32, "avx512-vnni", BENCH_HOST.cpu_flags),  # more cores: 2 threads would idle 30 of them
    Machine(2, "avx2", ("avx", "avx2", "fma")),  # another CPU class
    Machine(2, "avx512-vnni", (*BENCH_HOST.cpu_flags, "amx_tile", "amx_bf16")),  # same class, other kernels (AMX)
], ids=["more-cores", "other-class", "other-flags"])
def test_elsewhere_tensorflow_chooses(here):
    chosen = choose_threads(MEASURED, here)
    assert (chosen.intra, chosen.inter, chosen.source) == (0, 0, SOURCE_DEFAULT)


@pytest.mark.parametrize("inference", [
    {"intra_op_threads": 2, "inter_op_threads": 1},  # a manifest from before measured_on: where is unknown
    {"intra_op_threads": 2, "inter_op_threads": 1, "measured_on": {"cores": "2"}},  # edited, incomplete
    {"measured_on": BENCH_HOST.to_dict()},  # no setting to apply
    {},
], ids=["no-measured-on", "malformed", "no-setting", "empty"])
def test_an_unknown_measurement_is_never_applied(inference):
    assert choose_threads(inference, BENCH_HOST).source == SOURCE_DEFAULT


def test_the_users_threads_win_everywhere():
    for here in (BENCH_HOST, Machine(64, "other", ())):
        chosen = choose_threads(MEASURED, here, user=(8, 2))
        assert (chosen.intra, chosen.inter, chosen.source) == (8, 2, SOURCE_USER)


def test_freeze_records_the_bench_machine_beside_its_setting(tmp_path):
    project = Project(tmp_path)
    (tmp_path / "bench").mkdir()
    results = {"inference": {"full": {"recommended_threads": "intra4_inter2",
                                      "measured": {"recommended_threads": {**BENCH_HOST.to_dict(), "cpu": "AMD EPYC"}}}}}
    (tmp_path / "bench" / "results.json").write_text(json.dumps(results))
    assert measured_threads(project) == ((4, 2), BENCH_HOST)
    arguments = freeze_arguments(project)
    assert arguments[:2] == [contract.FLAG_THREADS, "4,2"]
    assert json.loads(arguments[arguments.index(contract.FLAG_THREADS_MEASURED_ON) + 1]) == BENCH_HOST.to_dict()
    # A result without the machine that measured it is no measurement: TensorFlow's choice, nothing recorded.
    del results["inference"]["full"]["measured"]
    (tmp_path / "bench" / "results.json").write_text(json.dumps(results))
    assert freeze_arguments(project) == [contract.FLAG_THREADS, "0,0"]


def test_the_manifest_section_is_read_bounded_and_a_broken_one_is_empty(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"inference": MEASURED}))
    assert manifest_inference(tmp_path) == MEASURED
    (tmp_path / "manifest.json").write_text("{not json")
    assert manifest_inference(tmp_path) == {}
    assert manifest_inference(tmp_path / "absent") == {}


def _container_threads(engine) -> tuple[str, str]:
    arguments = list(engine.runs[-1].command)
    return (arguments[arguments.index(contract.FLAG_INTRA_OP_THREADS) + 1],
            arguments[arguments.index(contract.FLAG_INTER_OP_THREADS) + 1])


def _infer(project, model, *args, env=None):
    return CliRunner().invoke(main, ["infer", "--project", str(project.root), "--no-golden-cache", "--golden-only",
                                     "--model", str(model), *args], catch_exceptions=False, env=env)


def test_infer_passes_its_choice_and_states_it_in_the_summary(engine, project, model, monkeypatch):  # noqa: F811
    manifest = json.loads((model / "manifest.json").read_text())
    (model / "manifest.json").write_text(json.dumps({**manifest, "inference": MEASURED}))
    monkeypatch.setattr(Machine, "here", classmethod(lambda cls: BENCH_HOST))
    result = _infer(project, model)
    assert result.exit_code == 0, result.output
    assert _container_threads(engine) == ("2", "1")
    assert json.loads(result.stdout)["threads"]["source"] == SOURCE_MEASURED

    monkeypatch.setattr(Machine, "here", classmethod(lambda cls: Machine(32, "avx2", ("avx2",))))
    result = _infer(project, model)
    assert _container_threads(engine) == ("0", "0")
    assert json.loads(result.stdout)["threads"] == {"intra_op": 0, "inter_op": 0, "source": SOURCE_DEFAULT,
                                                    "measured_on": BENCH_HOST.to_dict()}

    result = _infer(project, model, env={"COLDCHAIN_INFER_THREADS": "6,1"})
    assert _container_threads(engine) == ("6", "1")
    assert json.loads(result.stdout)["threads"]["source"] == SOURCE_USER
    result = _infer(project, model, "--threads", "3,2")
    assert _container_threads(engine) == ("3", "2") and json.loads(result.stdout)["threads"]["source"] == SOURCE_USER


@pytest.mark.parametrize("value", ["2", "a,b", "-1,1", "1,2,3"])
def test_a_malformed_threads_option_is_bad_input(engine, project, model, value):  # noqa: F811
    result = _infer(project, model, "--threads", value)
    assert result.exit_code == contract.Exit.USAGE and "INTRA,INTER" in result.output and not engine.runs
