"""The main job for real: data -> train -> freeze in the training image, infer in the inference
image, each in its own hardened container; and the clear failures of bad input."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from coldchain.config import IMAGES
from coldchain.errors import ContainerError, UsageError
from coldchain.environments.images import BuildOptions, build_images
from coldchain.steps.pipeline import StepConfig, run_step

pytestmark = pytest.mark.docker

TINY_DATA = ("--classes", "3", "--train-per-class", "16", "--val-per-class", "6", "--size", "32", "--seed", "3")
TINY_TRAIN = ("--image-size", "32", "--max-steps", "12", "--batch-size", "8", "--log-every", "4")


@pytest.fixture(scope="session")
def images(docker_engine, project, run_id, session_tags):
    specs = [IMAGES["train-cpu"], IMAGES["infer-cpu"]]
    session_tags.extend(spec.tag(run_id) for spec in specs)
    return {b.spec.role: b for b in build_images(docker_engine, project, specs, BuildOptions(prefix=run_id))}


@pytest.fixture(scope="session")
def chain(docker_engine, project, images, run_id, tmp_path_factory):
    """One small run of the whole chain, shared by the tests below."""
    work = tmp_path_factory.mktemp("chain")

    def step(name, role, module, output, inputs, arguments):
        config = StepConfig(name=name, role=role, module=module, output=output, inputs=inputs,
                            arguments=arguments, run_id=run_id, prefix=run_id)
        return run_step(docker_engine, project, config, images[role])

    step("data", "train", "data", work / "data", {}, TINY_DATA)
    step("train", "train", "train", work / "run", {"/data": work / "data"}, ("--data", "/data", *TINY_TRAIN))
    step("freeze", "train", "freeze", work / "model", {"/run": work / "run"}, ("--run", "/run"))
    summary = step("infer", "infer", "infer", work / "predictions.jsonl",
                   {"/model": work / "model", "/inputs/0": work / "data" / "val"},
                   ("--model", "/model", "--top-k", "2", "/inputs/0"))
    return {"work": work, "step": step, "summary": summary}


def test_training_runs_slim_resnet_v1_50_in_the_training_image(chain):
    run = chain["work"] / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 12
    # The frozen graph, in the inference image, scores the held-out images exactly as training's own
    # evaluation did: the same weights and preprocessing made it across.
    summary = json.loads(chain["summary"].strip().splitlines()[-1])
    assert metrics["held_out"]["images"] == summary["folder_accuracy"]["images"] == 18
    assert round(metrics["held_out"]["top1"], 4) == summary["folder_accuracy"]["top1"]
    assert metrics["numerics"]["onednn"]["enabled"] in (True, False) and metrics["numerics"]["threads_effective"]
    config = json.loads((run / "config.json").read_text())
    assert "resnet_v1_50" in json.dumps(config)
    assert any(p.name.startswith("events.out.tfevents") for p in run.rglob("*"))
    assert any(p.suffix == ".index" for p in run.iterdir())


def test_frozen_model_travels_with_its_manifest(chain, images):
    model = chain["work"] / "model"
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["model"]["sha256"] == hashlib.sha256((model / "model.pb").read_bytes()).hexdigest()
    fingerprint = json.dumps(manifest["environment"])
    assert images["train"].info.labels["io.coldchain.lock.sha256"] in fingerprint
    assert (model / "golden.npz").stat().st_size > 0


def test_inference_writes_top_k_for_every_held_out_image(chain):
    rows = [json.loads(line) for line in (chain["work"] / "predictions.jsonl").read_text().splitlines()]
    val_images = [p for p in (chain["work"] / "data" / "val").rglob("*.png")]
    assert len(rows) == len(val_images) == 18
    assert sorted(row["path"] for row in rows) == sorted(str(p) for p in val_images), "paths name the host's files"
    assert all(len(row["top_k"]) == 2 for row in rows)
    summary = json.loads(chain["summary"].strip().splitlines()[-1])
    assert summary["golden"]["ok"] is True
    truth = sum(row["top_k"][0]["label"] == Path(row["path"]).parent.name for row in rows) / len(rows)
    assert summary["folder_accuracy"] == {"top1": round(truth, 4), "images": 18}


def test_tampered_model_is_refused_before_use(chain):
    work = chain["work"]
    tampered = work / "tampered"
    shutil.copytree(work / "model", tampered)
    data = bytearray((tampered / "model.pb").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tampered / "model.pb").write_bytes(bytes(data))
    output = work / "tampered.jsonl"
    with pytest.raises(ContainerError) as caught:
        chain["step"]("infer", "infer", "infer", output, {"/model": tampered, "/inputs/0": work / "data" / "val"},
                      ("--model", "/model", "/inputs/0"))
    assert caught.value.container_exit == 2
    assert "sha256" in caught.value.message
    assert not output.exists(), "a failed step must leave no output behind"


def test_non_image_input_is_named(chain):
    work = chain["work"]
    inputs = work / "junk"
    inputs.mkdir()
    (inputs / "notes.png").write_text("this is not a picture")
    with pytest.raises(ContainerError) as caught:
        chain["step"]("infer", "infer", "infer", work / "junk.jsonl", {"/model": work / "model", "/inputs/0": inputs},
                      ("--model", "/model", "/inputs/0"))
    assert caught.value.container_exit == 2
    assert "notes.png" in caught.value.message


def test_missing_input_is_a_usage_error_on_the_host(chain):
    with pytest.raises(UsageError, match="not found"):
        chain["step"]("infer", "infer", "infer", chain["work"] / "x.jsonl", {"/model": chain["work"] / "nope"},
                      ("--model", "/model"))


def test_fine_tunes_from_an_official_layout_checkpoint(chain):
    """A checkpoint laid out like the official resnet_v1_50 one (1000 classes) loads; the logits
    are excluded because the class count differs. The official file cannot be downloaded here,
    so the training image writes one with the same variable names and shapes."""
    work = chain["work"]
    chain["step"]("checkpoint", "train", "checkpoint", work / "official", {},
                  ("--write-checkpoint-only", "--image-size", "32"))
    assert (work / "official" / "resnet_v1_50.ckpt.index").exists()
    chain["step"]("train", "train", "train", work / "finetuned",
                  {"/data": work / "data", "/checkpoint": work / "official"},
                  ("--data", "/data", "--checkpoint-path", "/checkpoint/resnet_v1_50.ckpt",
                   "--trainable-scopes", "resnet_v1_50/logits", *TINY_TRAIN))
    restored = json.loads((work / "finetuned" / "config.json").read_text())["checkpoint_init"]
    assert restored["exclude_scopes"] == ["resnet_v1_50/logits"]
    assert restored["restored_variables"] == 265


def test_same_seed_same_image_gives_identical_bytes(chain):
    """Train and freeze again with the same seed in the same image: checkpoint and frozen graph
    must match byte for byte (TF on this CPU allows it; see the README's reproducibility notes)."""
    work = chain["work"]
    chain["step"]("train", "train", "train", work / "run-again", {"/data": work / "data"}, ("--data", "/data", *TINY_TRAIN))
    chain["step"]("freeze", "train", "freeze", work / "model-again", {"/run": work / "run-again"}, ("--run", "/run"))

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    for name in ("model.ckpt-12.data-00000-of-00001", "model.ckpt-12.index"):
        assert digest(work / "run" / name) == digest(work / "run-again" / name), name
    for name in ("model.pb", "golden.npz", "manifest.json"):
        assert digest(work / "model" / name) == digest(work / "model-again" / name), name


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


def test_odd_but_valid_images_are_handled(docker_engine, chain, images, run_id, tmp_path):
    from coldchain.config import KIT_LABEL
    from coldchain.engine import Mount, RunSpec

    odd = tmp_path / "odd"
    odd.mkdir()
    odd.chmod(0o777)  # written by the image's non-root user
    result = docker_engine.run(RunSpec(image=images["train"].tag, command=("python", "-c", ODD_IMAGES, "/odd"),
                                       mounts=(Mount(odd, "/odd", read_only=False),), labels={KIT_LABEL: "coldchain"}))
    assert result.exit_code == 0, result.stderr[-2000:]
    output = chain["work"] / "odd.csv"
    chain["step"]("infer", "infer", "infer", output, {"/model": chain["work"] / "model", "/inputs/0": odd},
                  ("--model", "/model", "--format", "csv", "/inputs/0"))
    lines = output.read_text().splitlines()
    assert lines[0].startswith("path,label_1,probability_1")
    named = sorted(Path(line.split(",")[0]).name for line in lines[1:])
    assert named == sorted(["gray.png", "palette.png", "rgba.png", "cmyk.jpg", "sixteen bit.png", "rotated-ü.jpg"])
    result = docker_engine.run(RunSpec(image=images["infer"].info.id, command=("python", "-c", DECODED, "/odd"),
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
def test_broken_model_directories_are_refused(chain, breakage, expected):
    work = chain["work"]
    broken = work / f"broken-{breakage}"
    shutil.copytree(work / "model", broken)
    if breakage == "no-manifest":
        (broken / "manifest.json").unlink()
    elif breakage == "truncated-pb":
        data = (broken / "model.pb").read_bytes()
        (broken / "model.pb").write_bytes(data[: len(data) // 3])
    else:
        manifest = json.loads((broken / "manifest.json").read_text())
        manifest["schema_version"] = 99
        (broken / "manifest.json").write_text(json.dumps(manifest))
    output = work / f"{breakage}.jsonl"
    with pytest.raises(ContainerError) as caught:
        chain["step"]("infer", "infer", "infer", output, {"/model": broken, "/inputs/0": work / "data" / "val"},
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


def test_trains_from_slim_format_tfrecords(docker_engine, chain, images, tmp_path):
    from coldchain.config import KIT_LABEL
    from coldchain.engine import Mount, RunSpec

    records = tmp_path / "records"
    records.mkdir()
    records.chmod(0o777)
    result = docker_engine.run(RunSpec(
        image=images["train"].tag, command=("python", "-c", TO_TFRECORDS, "/data", "/records"),
        mounts=(Mount(chain["work"] / "data", "/data"), Mount(records, "/records", read_only=False)),
        labels={KIT_LABEL: "coldchain"}))
    assert result.exit_code == 0, result.stderr[-2000:]
    run = chain["work"] / "run-tfrecords"
    chain["step"]("train", "train", "train", run, {"/data": records}, ("--data", "/data", *TINY_TRAIN))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train_images"] == 48 and metrics["held_out"]["images"] == 18
