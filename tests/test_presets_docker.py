"""slim's preprocessing presets: the kit's numpy implementation of each, against slim's documented
evaluation steps written with TensorFlow's own ops (tests/slim_user/slim_preprocessing.py), on real
image files of several shapes, PNG and JPEG."""

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
    result = docker_engine.run(RunSpec(image=image, command=("python", "/t/compare_presets.py", "/i", str(size)),
                                       mounts=(Mount(ROOT / "tests" / "slim_user", "/t"), Mount(images, "/i")),
                                       labels=labels, timeout_s=600))
    assert result.exit_code == 0, result.stderr[-3000:]
    differences = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(differences) == 12
    for name, presets in differences.items():
        for preset, found in presets.items():
            assert found["shape"] == [size, size, 3], (name, preset)
            levels, mean_levels = found["max_abs"] / found["level"], found["mean_abs"] / found["level"]
            if name.endswith(".png"):
                # The same pixels in: slim's steps out, to the last bit.
                assert levels == 0.0, (name, preset, levels)
            else:
                # TensorFlow decodes JPEG with its fast integer IDCT, Pillow with the accurate one: about
                # one level apart on average, a few at most.
                assert mean_levels < 1.5 and levels <= 8, (name, preset, levels, mean_levels)
