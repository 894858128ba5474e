"""A signed model through the real containers: the session's tiny model (a copy, not frozen again)
signed and inferred with --trust; a tampered copy refused on the host with exit 2 before any container;
and the container's own re-hash of the mount refusing bytes that differ from what the host verified."""

from __future__ import annotations

import json
import shutil

import pytest

from coldchain.contract import ENV_SIGNED_FILES, MOUNT_MODEL, Exit
from coldchain.errors import ColdchainError, SignatureError
from coldchain.steps.infer import InferRequest, predict
from coldchain.steps.pipeline import StepConfig, StepSettings, run_step
from coldchain.steps.signing import sign_directory, verify_directory
from test_signing import make_key

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]


@pytest.fixture
def signed_model(tiny_chain, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_chain / "model", model)
    private, public, _ = make_key(tmp_path, "maker")
    sign_directory(model, private)
    return model, public


def test_infer_with_trust_verifies_and_predicts(docker_engine, project, run_id, kit_images, tiny_chain, signed_model,
                                                tmp_path):
    model, public = signed_model
    output = tmp_path / "predictions.jsonl"
    request = InferRequest(model=model, output=output, inputs=(tiny_chain / "data" / "val",), trust=(public,),
                           golden_cache=False, settings=StepSettings(prefix=run_id))
    summary = json.loads(predict(lambda: docker_engine, project, request, output))
    assert summary["signature"].startswith("verified: ") and summary["golden"]["ok"] is True
    assert output.read_text().count("\n") == summary["images"] > 0


def test_a_tampered_copy_is_refused_with_exit_2(docker_engine, project, run_id, tiny_chain, signed_model, tmp_path):
    model, public = signed_model
    golden = model / "golden.npz"
    data = bytearray(golden.read_bytes())
    data[len(data) // 2] ^= 0x01
    golden.write_bytes(bytes(data))
    output = tmp_path / "predictions.jsonl"
    request = InferRequest(model=model, output=output, inputs=(tiny_chain / "data" / "val",), trust=(public,),
                           settings=StepSettings(prefix=run_id))
    with pytest.raises(SignatureError) as refused:
        predict(lambda: pytest.fail("no engine before the signature holds"), project, request, output)
    assert refused.value.exit_code == Exit.USAGE and "golden.npz: changed after signing" in refused.value.message
    assert not output.exists()


def test_the_container_refuses_bytes_other_than_the_verified_ones(docker_engine, project, run_id, kit_images,
                                                                  tiny_chain, signed_model, tmp_path):
    """As if the directory changed between the host's check and the mount: the list says other bytes."""
    model, public = signed_model
    files = dict(verify_directory(model, (public,)).files, **{"model.pb": "0" * 64})
    step = StepConfig(name="infer", role="infer", module="infer", output=tmp_path / "p.jsonl",
                      inputs={MOUNT_MODEL: model}, arguments=("--model", MOUNT_MODEL, "--golden-only"),
                      prefix=run_id, run_id=run_id, environment={ENV_SIGNED_FILES: json.dumps(files)})
    with pytest.raises(ColdchainError) as refused:
        run_step(docker_engine, project, step, kit_images["infer"])
    assert refused.value.exit_code == Exit.USAGE
    assert "model.pb: sha256 differs from the verified signature" in str(refused.value)
