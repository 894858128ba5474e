"""slim's preprocessing presets: the kit's decoding and numpy implementation of each, against slim's
documented evaluation steps written with TensorFlow's own ops (tests/slim_user/slim_preprocessing.py),
on real image files of several shapes and kinds: PNG (with alpha), baseline and progressive JPEG with
4:2:0, 4:2:2 and 4:4:4 chroma, grayscale, EXIF-rotated."""

from __future__ import annotations

import json

import pytest

from coldchain.config import KIT_LABEL
from coldchain.engine import Mount, RunSpec
from conftest import ROOT

pytestmark = pytest.mark.docker

WRITE_IMAGES = r"""
import sys
import numpy as np
from PIL import Image
rng = np.random.default_rng(1)
for index, (width, height) in enumerate([(300, 200), (256, 256), (180, 400), (641, 481), (225, 224), (96, 90)]):
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([np.sin(x / (9 + index)), np.cos(y / (7 + index)), np.sin((x + y) / 13)], axis=-1)
    pixels = np.clip((base + rng.normal(0, 0.15, (height, width, 3)) + 1.2) * 100, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(f"{sys.argv[1]}/shape{index}.png")
    Image.fromarray(pixels).save(f"{sys.argv[1]}/shape{index}.jpg", quality=90)
    if index == 0:
        # The JPEG kinds decoders disagree on, a grayscale one, PNG with alpha, and an EXIF rotation.
        image = Image.fromarray(pixels)
        image.save(f"{sys.argv[1]}/progressive.jpg", quality=95, progressive=True)
        image.save(f"{sys.argv[1]}/chroma444.jpg", quality=92, subsampling=0)
        image.save(f"{sys.argv[1]}/chroma422.jpg", quality=88, subsampling=1)
        image.convert("L").save(f"{sys.argv[1]}/grayscale.jpg", quality=90)
        alpha = Image.fromarray(np.tile(np.linspace(30, 255, width).astype(np.uint8), (height, 1)))
        rgba = image.copy()
        rgba.putalpha(alpha)
        rgba.save(f"{sys.argv[1]}/alpha.png")
        exif = Image.Exif()
        exif[0x0112] = 6
        image.save(f"{sys.argv[1]}/exif-rotated.jpg", quality=90, exif=exif.tobytes())
"""


@pytest.mark.parametrize("size", [224, 64])
def test_presets_reproduce_slims_steps(docker_engine, kit_images, tmp_path, size):
    images = tmp_path / "images"
    images.mkdir()
    images.chmod(0o777)  # mkdir's mode is cut by the umask
    image = kit_images["train"].info.id
    labels = {KIT_LABEL: "coldchain"}
    made = docker_engine.run(RunSpec(image=image, command=("python", "-c", WRITE_IMAGES, "/i"),
                                     mounts=(Mount(images, "/i", read_only=False),), labels=labels, timeout_s=300))
    assert made.exit_code == 0, made.stderr[-2000:]
    # In the inference image: its simplejpeg reproduces TensorFlow's decoding where TensorFlow is absent.
    result = docker_engine.run(RunSpec(image=kit_images["infer"].info.id,
                                       command=("python", "/t/compare_presets.py", "/i", str(size)),
                                       mounts=(Mount(ROOT / "tests" / "slim_user", "/t"), Mount(images, "/i")),
                                       labels=labels, timeout_s=600))
    assert result.exit_code == 0, result.stderr[-3000:]
    differences = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(differences) == 18
    for name, presets in differences.items():
        for method in ("fast", "accurate"):
            # Where TensorFlow is absent, its decoding is reproduced: the same pixels, for every kind of file.
            assert presets.pop(f"without-tensorflow-{method}")["max_abs"] == 0.0, (name, method)
        for preset, found in presets.items():
            assert found["shape"] == [size, size, 3], (name, preset)
            # slim's presets decode with TensorFlow as slim's eval does (fast IDCT for JPEG, alpha dropped,
            # EXIF ignored): the same tensor as slim's steps, to the last bit, for every kind of file.
            assert found["max_abs"] == 0.0, (name, preset, found["max_abs"] / found["level"])


def test_encoded_goldens_name_the_stage_that_differs(docker_engine, kit_images):
    """Each way serving code gets the input path wrong, on each preset's encoded goldens, is named at
    its stage; the same pipeline passes, and a decoder that computes the same pixels passes named."""
    result = docker_engine.run(RunSpec(image=kit_images["infer"].info.id,
                                       command=("python", "/t/encoded_stages.py", "112"),
                                       mounts=(Mount(ROOT / "tests" / "slim_user", "/t"),),
                                       labels={KIT_LABEL: "coldchain"}, timeout_s=600))
    assert result.exit_code == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    expected = {"none": None, "other-idct": "decode", "opencv": "decode", "orientation": "decode",
                "tf2": "resize/crop", "antialias": "resize/crop", "bgr": "normalise"}
    for preset in ("vgg", "inception", "coldchain"):
        for change, stage in expected.items():
            case = found[preset][change]
            assert case["stage"] == stage and case["ok"] == (stage is None), (preset, change, case)
            if stage:
                assert f"at the {stage} stage" in case["message"] and "fix:" in case["message"], case["message"]
    # TensorFlow's accurate IDCT is what Pillow computes: the kit's own models decode the same with it.
    assert found["coldchain"]["tensorflow-accurate"] == {"ok": True, "stage": None, "differs_at": None,
                                                         "findings": ["decoder-differs"], "message": None}
    assert found["vgg"]["tensorflow-accurate"]["stage"] == "decode"
    # A decoder this environment cannot reproduce is refused by name with the fix, never replaced.
    refusals = found["refusals"]
    assert all(refusal and refusal["type"] == "DecoderUnavailable" for refusal in refusals.values()), refusals
    assert "TensorFlow is not installed" in refusals["bmp-without-tensorflow"]["message"]
    assert "simplejpeg" in refusals["jpeg-without-simplejpeg"]["message"]
    assert "OpenCV" in refusals["opencv-missing"]["message"] and "opencv-python-headless" in refusals["opencv-missing"]["message"]
