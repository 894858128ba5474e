"""The doctor on each kind of broken graph, in real runtimes: it must name the cause and the fix.

Assertions are on the doctor's own diagnosis (finding codes, the op, the library, the versions),
never on the error text TensorFlow itself prints. The broken models are made the way the drift
test makes them (drift/matrix.toml variants), from a tiny training run of this session."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from coldchain.environments.matrix import load_matrix
from coldchain.drift.options import DriftOptions
from coldchain.drift.variants import make_variants
from coldchain.environments.images import BuildOptions, build_images
from coldchain.steps.diagnose import DoctorRequest, run_doctor

pytestmark = pytest.mark.docker

VARIANTS = ("custom-op", "gpu-pinned", "gpu-pinned-default-freeze", "training-mode", "top-k", "top-k-int64",
            "top-k-stripped")


@pytest.fixture(scope="session")
def broken_models(docker_engine, project, run_id, session_tags, kit_images, tiny_chain, tmp_path_factory):
    matrix = load_matrix(project.path("drift/matrix.toml"))
    session_tags.append(f"{run_id}-opbuild:cpu")
    session_tags.extend(matrix.envs[name].image_spec().tag(run_id) for name in ("tf2.7-py3.9", "tf2.21-py3.11"))
    (tf221,) = build_images(docker_engine, project, [matrix.envs["tf2.21-py3.11"].image_spec()],
                            BuildOptions(prefix=run_id))
    options = DriftOptions(model=tiny_chain / "model", run=tiny_chain / "run", out=tmp_path_factory.mktemp("drift"),
                           prefix=run_id, run_id=run_id)
    paths = make_variants(docker_engine, project, matrix, options, set(VARIANTS) | {"default"},
                          {"training": kit_images["train"], "tf2.21-py3.11": tf221})
    return {"paths": paths}


def doctor(engine, project, run_id, model: Path, *, env: str | None = None, **flags) -> tuple[int, dict]:
    code, text = run_doctor(engine, project, DoctorRequest(model=model, env_name=env, prefix=run_id,
                                                           load_op_libraries=flags.get("load", False),
                                                           allow_soft_placement=flags.get("soft", False),
                                                           as_json=True))
    return code, json.loads(text)


def blocking(diagnosis: dict) -> dict[str, dict]:
    return {finding["code"]: finding for finding in diagnosis["findings"] if finding["severity"] == "error"}


def test_a_good_model_is_loadable(docker_engine, project, run_id, broken_models):
    code, diagnosis = doctor(docker_engine, project, run_id, broken_models["paths"]["default"])
    assert code == 0 and blocking(diagnosis) == {} and diagnosis["outcome"] is None
    assert diagnosis["runtime"]["tensorflow"] == "2.14.1"


def test_custom_op_without_its_library_names_the_library_to_load(docker_engine, project, run_id, broken_models):
    model = broken_models["paths"]["custom-op"]
    code, diagnosis = doctor(docker_engine, project, run_id, model)
    finding = blocking(diagnosis)["unregistered-op"]
    assert code == 3 and diagnosis["outcome"] == "unregistered-op"
    assert finding["op"] == "ColdchainTemperatureScale"
    assert "libcoldchain_ops.so" in finding["cause"] and "2.14.1" in finding["cause"]
    assert "--load-op-libraries" in finding["fix"]
    code, diagnosis = doctor(docker_engine, project, run_id, model, load=True)
    assert code == 0 and diagnosis["loaded_libraries"] and not blocking(diagnosis)


def test_custom_op_library_from_another_tf_is_an_abi_mismatch(docker_engine, project, run_id, broken_models):
    code, diagnosis = doctor(docker_engine, project, run_id, broken_models["paths"]["custom-op"], env="tf2.21-py3.11",
                             load=True)
    finding = blocking(diagnosis)["op-library-abi-mismatch"]
    assert code == 3 and diagnosis["outcome"] == "op-library-abi-mismatch"
    assert "2.14.1" in finding["cause"] and "2.21" in finding["cause"]
    assert "rebuild" in finding["fix"] and "2.21" in finding["fix"]
    assert diagnosis["loaded_libraries"] == []  # known to be incompatible, so never dlopen'ed


def test_custom_op_library_missing_from_the_model_directory(docker_engine, project, run_id, broken_models, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(broken_models["paths"]["custom-op"], copy)
    shutil.rmtree(copy / "ops")
    code, diagnosis = doctor(docker_engine, project, run_id, copy, load=True)
    assert code == 3 and set(blocking(diagnosis)) >= {"op-library-missing", "unregistered-op"}
    assert "ops/" in blocking(diagnosis)["op-library-missing"]["fix"]


def test_gpu_pinned_graph_on_a_cpu_host(docker_engine, project, run_id, broken_models):
    code, diagnosis = doctor(docker_engine, project, run_id, broken_models["paths"]["gpu-pinned"])
    finding = blocking(diagnosis)["device-unavailable"]
    assert code == 3 and "GPU" in finding["cause"] and finding["confirmed"] == "confirmed by the run stage"
    # The fix that works on any graph, whoever froze it: clear the device fields, with the command that does it.
    assert "reexport" in finding["fix"] and "--clear-devices" in finding["fix"] and "soft placement" in finding["fix"]
    groups = [f for f in diagnosis["findings"] if f["code"] == "device-unavailable"]
    assert sum(f["count"] for f in groups) > 100 and len(groups) < 20, "hundreds of pinned nodes, grouped by op type"
    code, diagnosis = doctor(docker_engine, project, run_id, broken_models["paths"]["gpu-pinned"], soft=True)
    assert code == 0 and {f["code"] for f in diagnosis["findings"]} == {"device-unavailable"}  # warnings only
    code, diagnosis = doctor(docker_engine, project, run_id, broken_models["paths"]["gpu-pinned-default-freeze"])
    assert code == 0 and diagnosis["findings"] == []  # the default freeze cleared the device strings


def test_training_mode_graph(docker_engine, project, run_id, broken_models):
    code, diagnosis = doctor(docker_engine, project, run_id, broken_models["paths"]["training-mode"])
    finding = blocking(diagnosis)["batch-norm-training-mode"]
    assert code == 3 and finding["op"].startswith("FusedBatchNorm")
    assert "is_training=False" in finding["fix"]


def test_newer_attrs_in_older_tf_and_the_strip_fix(docker_engine, project, run_id, broken_models):
    # TF 2.7 does not know TopKV2's Tk and index_type; holding their defaults, its importer ignores them.
    code, diagnosis = doctor(docker_engine, project, run_id, broken_models["paths"]["top-k"], env="tf2.7-py3.9")
    finding = next(f for f in diagnosis["findings"] if f["code"] == "unknown-attr")
    assert code == 0 and finding["severity"] == "warning" and finding["op"] == "TopKV2"
    assert "Tk" in finding["cause"] and "index_type" in finding["cause"] and "golden probe" in finding["confirmed"]
    assert diagnosis["runtime"]["tensorflow"].startswith("2.7.")
    # With an int64 k the attribute matters, and TF 2.7's importer refuses the graph.
    code, diagnosis = doctor(docker_engine, project, run_id, broken_models["paths"]["top-k-int64"], env="tf2.7-py3.9")
    finding = blocking(diagnosis)["unknown-attr"]
    assert code == 3 and diagnosis["outcome"] == "unknown-attr" and finding["confirmed"] == "confirmed by the import stage"
    assert "--strip-default-attrs" in finding["fix"]
    code, diagnosis = doctor(docker_engine, project, run_id, broken_models["paths"]["top-k-stripped"], env="tf2.7-py3.9")
    assert code == 0 and not blocking(diagnosis)


def test_truncated_model_and_wrong_output_names(docker_engine, project, run_id, broken_models, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(broken_models["paths"]["default"], copy)
    data = (copy / "model.pb").read_bytes()
    (copy / "model.pb").write_bytes(data[: len(data) // 3])
    code, diagnosis = doctor(docker_engine, project, run_id, copy)
    assert code == 3 and {"model-sha256-mismatch", "model-unreadable"} <= set(blocking(diagnosis))
    (copy / "model.pb").write_bytes(data)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["outputs"][0]["name"] = "resnet_v1_50/predictions/Softmax"  # slim's name, not the frozen graph's
    (copy / "manifest.json").write_text(json.dumps(manifest))
    code, diagnosis = doctor(docker_engine, project, run_id, copy)
    finding = blocking(diagnosis)["missing-node"]
    assert code == 3 and finding["node"] == "resnet_v1_50/predictions/Softmax"
    assert "probabilities" in finding["cause"]  # the graph's real outputs are suggested
