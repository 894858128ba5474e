"""A model directory edited after freezing is caught and named by the field, by the doctor and by infer
alike (one shared validator); golden failures name the first diverging block; files that are not
frozen graphs are named for what they are."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from coldchain.config import KIT_LABEL
from coldchain.contract import Exit
from coldchain.engine import Mount, RunSpec
from coldchain.errors import ContainerError
from coldchain.steps.diagnose import DoctorRequest, run_doctor
from coldchain.steps.pipeline import StepConfig, run_step

pytestmark = pytest.mark.docker

PERTURB_GOLDEN = r"""
import hashlib, json, sys
import numpy as np
from incontainer.common import write_deterministic_npz
model = sys.argv[1]
with np.load(f"{model}/golden.npz") as archive:
    arrays = {key: archive[key] for key in archive.files}
for key in ("block2", "block3", "block4", "logits", "probabilities"):
    arrays[key] = arrays[key] * 1.5 + 0.5
write_deterministic_npz(f"{model}/golden.npz", arrays)
manifest = json.load(open(f"{model}/manifest.json"))
manifest["golden"]["sha256"] = hashlib.sha256(open(f"{model}/golden.npz", "rb").read()).hexdigest()
json.dump(manifest, open(f"{model}/manifest.json", "w"))
"""

OTHER_FILES = r"""
import os, sys
import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from PIL import Image
out = sys.argv[1]
graph_def = tf.compat.v1.GraphDef()
graph_def.ParseFromString(open("/model/model.pb", "rb").read())
os.makedirs(f"{out}/text", exist_ok=True)
open(f"{out}/text/model.pbtxt", "w").write(text_format.MessageToString(graph_def))
module = tf.Module()
module.v = tf.Variable(1.0)
tf.saved_model.save(module, f"{out}/savedmodel")
os.makedirs(f"{out}/renamed", exist_ok=True)
os.replace(f"{out}/savedmodel/saved_model.pb", f"{out}/renamed/model.pb")
os.makedirs(f"{out}/picture", exist_ok=True)
Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(f"{out}/picture/model.pb", format="JPEG")
"""


def in_training_image(engine, image, script: str, *args: str, mounts=()):
    result = engine.run(RunSpec(image=image.info.id, command=("python", "-c", script, *args), mounts=tuple(mounts),
                                user="0:0", labels={KIT_LABEL: "coldchain"}, timeout_s=600))
    assert result.exit_code == 0, result.stderr[-3000:]


def copy_model(tiny_chain, tmp_path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(tiny_chain / "model", target)
    return target


def edit_manifest(model: Path, change) -> None:
    manifest = json.loads((model / "manifest.json").read_text())
    change(manifest)
    (model / "manifest.json").write_text(json.dumps(manifest))


def infer_error(engine, project, run_id, kit_images, tiny_chain, model: Path) -> ContainerError:
    output = model.parent / f"{model.name}.jsonl"
    step = StepConfig(name="infer", role="infer", module="infer", output=output,
                      inputs={"/model": model, "/inputs/0": tiny_chain / "data" / "val"},
                      arguments=("--model", "/model", "/inputs/0"), prefix=run_id, run_id=run_id)
    with pytest.raises(ContainerError) as caught:
        run_step(engine, project, step, kit_images["infer"])
    assert not output.exists()
    assert "Traceback" not in (caught.value.log_tail or "") and "Traceback" not in caught.value.message
    return caught.value


def doctor(engine, project, run_id, model: Path, **flags) -> tuple[int, dict]:
    code, text = run_doctor(engine, project, DoctorRequest(model=model, prefix=run_id, as_json=True, **flags))
    return code, json.loads(text)


def test_a_golden_mismatch_names_the_first_diverging_block(docker_engine, project, run_id, kit_images, tiny_chain,
                                                          tmp_path):
    model = copy_model(tiny_chain, tmp_path, "perturbed")
    in_training_image(docker_engine, kit_images["train"], PERTURB_GOLDEN, "/m", mounts=(Mount(model, "/m", False),))
    error = infer_error(docker_engine, project, run_id, kit_images, tiny_chain, model)
    assert error.exit_code == Exit.GOLDEN_MISMATCH and error.container_exit == Exit.GOLDEN_MISMATCH
    assert "first divergence at block2" in error.message and str(model) in error.message


EDITS = {
    "preprocessing": (lambda m: m["preprocessing"].update(channel_order="BGR"), "channel_order"),
    "labels": (lambda m: m["labels"].pop(), "labels"),
    "model.sha256": (lambda m: m["model"].pop("sha256"), "model.sha256"),
    "inputs": (lambda m: m.update(inputs="input"), "inputs"),
    "golden.tensors": (lambda m: m["golden"].update(tensors=[{}]), "golden.tensors[0]"),
    "schema_version": (lambda m: m.update(schema_version="1"), "schema_version"),
}


@pytest.mark.parametrize("field", sorted(EDITS))
def test_every_manifest_edit_is_named_by_doctor_and_infer(docker_engine, project, run_id, kit_images, tiny_chain,
                                                          tmp_path, field):
    change, named = EDITS[field]
    model = copy_model(tiny_chain, tmp_path, f"edited-{field}")
    edit_manifest(model, change)
    code, diagnosis = doctor(docker_engine, project, run_id, model)
    problems = [f for f in diagnosis["findings"] if f["code"] == "manifest-invalid" and f["stage"] == "manifest"]
    assert code == Exit.MODEL_BLOCKED and problems, diagnosis["findings"]
    assert any(named in finding["cause"] and "manifest.json" in finding["cause"] for finding in problems), problems
    error = infer_error(docker_engine, project, run_id, kit_images, tiny_chain, model)
    assert error.exit_code == Exit.USAGE and named in error.message and str(model) in error.message


def test_a_sha256_mismatch_shows_both_hashes_whole(docker_engine, project, run_id, tiny_chain, tmp_path, kit_images):
    model = copy_model(tiny_chain, tmp_path, "tampered")
    data = bytearray((model / "model.pb").read_bytes())
    data[100] ^= 0x01
    (model / "model.pb").write_bytes(bytes(data))
    code, diagnosis = doctor(docker_engine, project, run_id, model)
    finding = next(f for f in diagnosis["findings"] if f["code"] == "model-sha256-mismatch")
    recorded = json.loads((model / "manifest.json").read_text())["model"]["sha256"]
    assert code == 3 and recorded in finding["cause"]
    assert len([word for word in finding["cause"].split() if len(word.strip(",()")) == 64]) == 2


def test_files_that_are_not_binary_graphs_are_named_for_what_they_are(docker_engine, project, run_id, kit_images,
                                                                       tiny_chain, tmp_path):
    others = tmp_path / "others"
    others.mkdir()
    others.chmod(0o777)  # mkdir's mode is cut by the umask
    in_training_image(docker_engine, kit_images["train"], OTHER_FILES, "/out",
                      mounts=(Mount(tiny_chain / "model", "/model"), Mount(others, "/out", False)))
    code, diagnosis = doctor(docker_engine, project, run_id, others / "text" / "model.pbtxt")
    assert code == 0 and diagnosis["outcome"] is None, "a text-format GraphDef is read as TensorFlow reads it"
    for name, what in (("renamed", "SavedModel's saved_model.pb"), ("picture", "is a JPEG image")):
        with pytest.raises(ContainerError) as caught:
            doctor(docker_engine, project, run_id, others / name / "model.pb")
        assert caught.value.container_exit == Exit.USAGE and what in caught.value.message, caught.value.message
        assert str(others / name / "model.pb") in caught.value.message
