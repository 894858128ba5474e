"""The main job for real: data -> train -> freeze in the training image, infer in the inference
image, each in its own hardened container; and the clear failures of bad input."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from coldchain.errors import ContainerError, UsageError
from coldchain.steps.pipeline import StepConfig, run_step
from conftest import TINY_CLASSES, TINY_STEPS, TINY_TRAIN, TINY_TRAIN_PER_CLASS, TINY_VAL_PER_CLASS

pytestmark = pytest.mark.docker

HELD_OUT = TINY_CLASSES * TINY_VAL_PER_CLASS  # images in tiny_chain's data/val


@pytest.fixture(scope="module")
def step(docker_engine, project, run_id, kit_images):
    """Run one step in the session's kit image of its role."""
    def run(name, role, module, output, inputs, arguments):
        config = StepConfig(name=name, role=role, module=module, output=output, inputs=inputs,
                            arguments=arguments, run_id=run_id, prefix=run_id)
        return run_step(docker_engine, project, config, kit_images[role])
    return run


@pytest.fixture(scope="module")
def predicted(step, tiny_chain, tmp_path_factory):
    """The last link of the chain: tiny_chain's model predicting its held-out images (top 2)."""
    output = tmp_path_factory.mktemp("predicted") / "predictions.jsonl"
    summary = step("infer", "infer", "infer", output, {"/model": tiny_chain / "model",
                                                       "/inputs/0": tiny_chain / "data" / "val"},
                   ("--model", "/model", "--top-k", "2", "/inputs/0"))
    return {"predictions": output, "summary": json.loads(summary.strip().splitlines()[-1])}


def test_training_runs_slim_resnet_v1_50_in_the_training_image(tiny_chain, predicted):
    run = tiny_chain / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == TINY_STEPS
    # The frozen graph, in the inference image, scores the held-out images exactly as training's own
    # evaluation did: the same weights and preprocessing made it across.
    summary = predicted["summary"]
    assert metrics["held_out"]["images"] == summary["folder_accuracy"]["images"] == HELD_OUT
    assert round(metrics["held_out"]["top1"], 4) == summary["folder_accuracy"]["top1"]
    assert metrics["numerics"]["onednn"]["enabled"] in (True, False) and metrics["numerics"]["threads_effective"]
    config = json.loads((run / "config.json").read_text())
    assert "resnet_v1_50" in json.dumps(config)
    assert any(p.name.startswith("events.out.tfevents") for p in run.rglob("*"))
    assert any(p.suffix == ".index" for p in run.iterdir())


def test_frozen_model_travels_with_its_manifest(tiny_chain, kit_images):
    model = tiny_chain / "model"
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["model"]["sha256"] == hashlib.sha256((model / "model.pb").read_bytes()).hexdigest()
    fingerprint = json.dumps(manifest["environment"])
    assert kit_images["train"].info.labels["io.coldchain.lock.sha256"] in fingerprint
    assert (model / "golden.npz").stat().st_size > 0


def test_inference_writes_top_k_for_every_held_out_image(tiny_chain, predicted):
    rows = [json.loads(line) for line in predicted["predictions"].read_text().splitlines()]
    val_images = [p for p in (tiny_chain / "data" / "val").rglob("*.png")]
    assert len(rows) == len(val_images) == HELD_OUT
    assert sorted(row["path"] for row in rows) == sorted(str(p) for p in val_images), "paths name the host's files"
    assert all(len(row["top_k"]) == 2 for row in rows)
    summary = predicted["summary"]
    assert summary["golden"]["ok"] is True
    truth = sum(row["top_k"][0]["label"] == Path(row["path"]).parent.name for row in rows) / len(rows)
    assert summary["folder_accuracy"] == {"top1": round(truth, 4), "images": HELD_OUT}


def test_tampered_model_is_refused_before_use(step, tiny_chain, tmp_path):
    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_chain / "model", tampered)
    data = bytearray((tampered / "model.pb").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tampered / "model.pb").write_bytes(bytes(data))
    output = tmp_path / "tampered.jsonl"
    with pytest.raises(ContainerError) as caught:
        step("infer", "infer", "infer", output, {"/model": tampered, "/inputs/0": tiny_chain / "data" / "val"},
             ("--model", "/model", "/inputs/0"))
    assert caught.value.container_exit == 2
    assert "sha256" in caught.value.message
    assert not output.exists(), "a failed step must leave no output behind"


def test_non_image_input_is_named(step, tiny_chain, tmp_path):
    inputs = tmp_path / "junk"
    inputs.mkdir()
    (inputs / "notes.png").write_text("this is not a picture")
    with pytest.raises(ContainerError) as caught:
        step("infer", "infer", "infer", tmp_path / "junk.jsonl", {"/model": tiny_chain / "model", "/inputs/0": inputs},
             ("--model", "/model", "/inputs/0"))
    assert caught.value.container_exit == 2
    assert "notes.png" in caught.value.message


def test_missing_input_is_a_usage_error_on_the_host(step, tmp_path):
    with pytest.raises(UsageError, match="not found"):
        step("infer", "infer", "infer", tmp_path / "x.jsonl", {"/model": tmp_path / "nope"}, ("--model", "/model"))


def test_fine_tunes_from_an_official_layout_checkpoint(step, tiny_chain, tmp_path):
    """A checkpoint laid out like the official resnet_v1_50 one (1000 classes) loads; the logits
    are excluded because the class count differs. The official file cannot be downloaded here,
    so the training image writes one with the same variable names and shapes."""
    step("checkpoint", "train", "checkpoint", tmp_path / "official", {},
         ("--write-checkpoint-only", "--image-size", "32"))
    assert (tmp_path / "official" / "resnet_v1_50.ckpt.index").exists()
    step("train", "train", "train", tmp_path / "finetuned",
         {"/data": tiny_chain / "data", "/checkpoint": tmp_path / "official"},
         ("--data", "/data", "--checkpoint-path", "/checkpoint/resnet_v1_50.ckpt",
          "--trainable-scopes", "resnet_v1_50/logits", *TINY_TRAIN))
    restored = json.loads((tmp_path / "finetuned" / "config.json").read_text())["checkpoint_init"]
    assert restored["exclude_scopes"] == ["resnet_v1_50/logits"]
    assert restored["restored_variables"] == 265


def test_same_seed_same_image_gives_identical_bytes(step, tiny_chain, tmp_path):
    """Train and freeze again with the same seed in the same image: checkpoint and frozen graph
    must match byte for byte (TF on this CPU allows it; see the README's reproducibility notes).
    tiny_chain trained and froze with these very arguments."""
    step("train", "train", "train", tmp_path / "run-again", {"/data": tiny_chain / "data"},
         ("--data", "/data", *TINY_TRAIN))
    step("freeze", "train", "freeze", tmp_path / "model-again", {"/run": tmp_path / "run-again"}, ("--run", "/run"))

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    for name in (f"model.ckpt-{TINY_STEPS}.data-00000-of-00001", f"model.ckpt-{TINY_STEPS}.index"):
        assert digest(tiny_chain / "run" / name) == digest(tmp_path / "run-again" / name), name
    for name in ("model.pb", "golden.npz", "manifest.json"):
        assert digest(tiny_chain / "model" / name) == digest(tmp_path / "model-again" / name), name


ODD_IMAGES = r"""
import io, os, sys
from PIL import Image
out = sys.argv[1]
base = Image.new("RGB", (48, 40), (200, 30, 30))
base.paste((10, 220, 40), (0, 0, 8, 40))  # a green band on the left, to see where EXIF rotation puts it
base.convert("L").save(os.path.join(out, "gray.png"))
base.convert("P", palette=Image.ADAPTIVE).save(os.path.join(out, "palette.png"))
Image.new("RGBA", (40, 40), (0, 0, 255, 90)).save(os.path.join(out, "rgba.png"))
base.convert("CMYK").save(os.path.join(out, "cmyk.jpg"))
Image.new("I;16", (32, 32), 40000).save(os.path.join(out, "sixteen bit.png"))
exif = Image.Exif(); exif[0x0112] = 6
base.save(os.path.join(out, "rotated-ü.jpg"), exif=exif)
"""

# What the kit decodes each odd image to: (width, height) and the RGB value of a pixel.
DECODED = r"""
import json, os, sys
from incontainer.data.image_files import decode_image_file
found = {}
for name in sorted(os.listdir(sys.argv[1])):
    image = decode_image_file(os.path.join(sys.argv[1], name))
    found[name] = {"mode": image.mode, "size": list(image.size), "top_left": list(image.getpixel((0, 0))),
                   "centre": list(image.getpixel((image.size[0] // 2, image.size[1] // 2)))}
print(json.dumps(found))
"""


def test_odd_but_valid_images_are_handled(docker_engine, step, tiny_chain, kit_images, tmp_path):
    from coldchain.config import KIT_LABEL
    from coldchain.engine import Mount, RunSpec

    odd = tmp_path / "odd"
    odd.mkdir()
    odd.chmod(0o777)  # written by the image's non-root user
    result = docker_engine.run(RunSpec(image=kit_images["train"].tag, command=("python", "-c", ODD_IMAGES, "/odd"),
                                       mounts=(Mount(odd, "/odd", read_only=False),), labels={KIT_LABEL: "coldchain"}))
    assert result.exit_code == 0, result.stderr[-2000:]
    output = tmp_path / "odd.csv"
    step("infer", "infer", "infer", output, {"/model": tiny_chain / "model", "/inputs/0": odd},
         ("--model", "/model", "--format", "csv", "/inputs/0"))
    lines = output.read_text().splitlines()
    assert lines[0].startswith("path,label_1,probability_1")
    named = sorted(Path(line.split(",")[0]).name for line in lines[1:])
    assert named == sorted(["gray.png", "palette.png", "rgba.png", "cmyk.jpg", "sixteen bit.png", "rotated-ü.jpg"])
    result = docker_engine.run(RunSpec(image=kit_images["infer"].info.id, command=("python", "-c", DECODED, "/odd"),
                                       mounts=(Mount(odd, "/odd"),), labels={KIT_LABEL: "coldchain"}))
    assert result.exit_code == 0, result.stderr[-2000:]
    decoded = json.loads(result.stdout)
    assert all(entry["mode"] == "RGB" for entry in decoded.values())
    gray = round(0.299 * 200 + 0.587 * 30 + 0.114 * 30)  # ITU-R 601-2 luma, as Pillow converts to L
    assert decoded["gray.png"]["centre"] == [gray, gray, gray]
    assert decoded["palette.png"]["centre"] == [200, 30, 30]
    # Alpha composited on white: 255 * (1 - 90/255) + colour * 90/255.
    assert decoded["rgba.png"]["centre"] == [165, 165, 255]
    red, green, blue = decoded["cmyk.jpg"]["centre"]  # a CMYK JPEG of the red, lossy both ways
    assert red > 150 and green < 80 and blue < 80
    assert decoded["sixteen bit.png"]["centre"] == [156, 156, 156], "16 bits scaled to 8, not clipped"
    rotated = decoded["rotated-ü.jpg"]
    assert rotated["size"] == [40, 48], "upright per EXIF orientation 6 (rotated 90 degrees)"
    assert rotated["top_left"][1] > 150 and rotated["top_left"][0] < 80, "the green band is now at the top"


@pytest.mark.parametrize("breakage, expected", [
    ("no-manifest", "manifest"),
    ("truncated-pb", "sha256"),
    ("newer-schema", "schema"),
])
def test_broken_model_directories_are_refused(step, tiny_chain, tmp_path, breakage, expected):
    broken = tmp_path / f"broken-{breakage}"
    shutil.copytree(tiny_chain / "model", broken)
    if breakage == "no-manifest":
        (broken / "manifest.json").unlink()
    elif breakage == "truncated-pb":
        data = (broken / "model.pb").read_bytes()
        (broken / "model.pb").write_bytes(data[: len(data) // 3])
    else:
        manifest = json.loads((broken / "manifest.json").read_text())
        manifest["schema_version"] = 99
        (broken / "manifest.json").write_text(json.dumps(manifest))
    output = tmp_path / f"{breakage}.jsonl"
    with pytest.raises(ContainerError) as caught:
        step("infer", "infer", "infer", output, {"/model": broken, "/inputs/0": tiny_chain / "data" / "val"},
             ("--model", "/model", "/inputs/0"))
    assert caught.value.container_exit == 2
    assert expected in caught.value.message.lower()
    assert str(broken) in caught.value.message, "the message names the user's file"
    assert not output.exists()


TO_TFRECORDS = r"""
import os, sys
import tensorflow as tf
source, out = sys.argv[1], sys.argv[2]
names = [line.strip() for line in open(os.path.join(source, "labels.txt")) if line.strip()]
with open(os.path.join(out, "labels.txt"), "w") as handle:
    handle.writelines(f"{index}:{name}\n" for index, name in enumerate(names))
for split, slim_split in (("train", "train"), ("val", "validation")):
    path = os.path.join(out, f"shapes_{slim_split}_00000-of-00001.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for label, name in enumerate(names):
            folder = os.path.join(source, split, name)
            for filename in sorted(os.listdir(folder)):
                encoded = open(os.path.join(folder, filename), "rb").read()
                feature = {"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
                           "image/format": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"png"])),
                           "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))}
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
"""


def test_trains_from_slim_format_tfrecords(docker_engine, step, tiny_chain, kit_images, tmp_path):
    from coldchain.config import KIT_LABEL
    from coldchain.engine import Mount, RunSpec

    records = tmp_path / "records"
    records.mkdir()
    records.chmod(0o777)
    result = docker_engine.run(RunSpec(
        image=kit_images["train"].tag, command=("python", "-c", TO_TFRECORDS, "/data", "/records"),
        mounts=(Mount(tiny_chain / "data", "/data"), Mount(records, "/records", read_only=False)),
        labels={KIT_LABEL: "coldchain"}))
    assert result.exit_code == 0, result.stderr[-2000:]
    run = tmp_path / "run-tfrecords"
    step("train", "train", "train", run, {"/data": records}, ("--data", "/data", *TINY_TRAIN))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train_images"] == TINY_CLASSES * TINY_TRAIN_PER_CLASS and metrics["held_out"]["images"] == HELD_OUT
