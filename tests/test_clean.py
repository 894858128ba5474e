"""`make prune` (clean --superseded) against the fake engine: what this checkout no longer uses goes,
whatever it still uses or cannot judge stays."""

from __future__ import annotations

import os
import subprocess
import sys

from coldchain.cache import image_identity
from coldchain.config import IMAGES, KIT_LABEL
from coldchain.engine import ImageInfo
from coldchain.environments.images import BuildOptions, build_image
from coldchain.steps.clean import CleanRequest, clean, kit_specs
from fake_engine import FakeEngine

PRUNE = CleanRequest(superseded=True)


def _ended_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_prune_takes_the_kits_name_from_an_image_this_checkout_would_not_build(tiny_project):
    """A CUDA image is rebuilt only when someone asks for it: an old one under the kit's name kept 11 GB
    on a CI machine until its disk ran out. Its Dockerfile differs now, so it loses the name."""
    engine = FakeEngine(registry=True)
    infer = build_image(engine, tiny_project, IMAGES["infer-cpu"], BuildOptions())
    train = build_image(engine, tiny_project, IMAGES["train-cpu"], BuildOptions())
    dockerfile = tiny_project.root / "Dockerfile.infer"
    dockerfile.write_text(dockerfile.read_text() + "# an edit\n")
    clean(engine, tiny_project, PRUNE)
    assert engine.inspect_image("coldchain-infer:cpu") is None
    assert engine.inspect_image("coldchain-train:cpu").id == train.info.id
    assert infer.info.id not in {info.id for info in engine.images.values()}


def test_prune_keeps_images_of_this_checkouts_inputs_and_names_it_cannot_judge(tiny_project):
    engine = FakeEngine(registry=True)
    build_image(engine, tiny_project, IMAGES["infer-cpu"], BuildOptions())
    build_image(engine, tiny_project, IMAGES["infer-cpu"], BuildOptions(prefix="mine"))  # another prefix: not the kit's name
    engine.images["coldchain-reference:adopted"] = ImageInfo("sha256:ref", ("coldchain-reference:adopted",),
                                                              {KIT_LABEL: "coldchain", "io.coldchain.source.sha256": "x"}, 1)
    dockerfile = tiny_project.root / "Dockerfile.infer"
    before = set(engine.images)
    clean(engine, tiny_project, PRUNE)
    assert set(engine.images) == before
    dockerfile.write_text(dockerfile.read_text() + "# an edit\n")
    clean(engine, tiny_project, PRUNE)
    assert set(engine.images) == before - {"coldchain-infer:cpu"}  # the adopted model's reference stays


def test_prune_removes_the_tags_of_test_sessions_that_were_killed(tiny_project):
    engine = FakeEngine(registry=True)
    kit = {KIT_LABEL: "coldchain"}
    dead, live = f"cctest-{_ended_pid()}-a1b2c3-infer:cuda", f"cctest-{os.getpid()}-d4e5f6-infer:cuda"
    engine.images[dead] = ImageInfo("sha256:old", (dead,), kit, 5)
    engine.images[live] = ImageInfo("sha256:new", (live,), kit, 5)
    engine.images["cctest-notasession-infer:cuda"] = ImageInfo("sha256:x", ("cctest-notasession-infer:cuda",), kit, 5)
    clean(engine, tiny_project, PRUNE)
    assert dead not in engine.images
    assert live in engine.images and "cctest-notasession-infer:cuda" in engine.images


def test_prune_takes_the_op_build_images_name_once_the_training_image_is_another(tiny_project):
    engine = FakeEngine(registry=True)
    train = build_image(engine, tiny_project, IMAGES["train-cpu"], BuildOptions())
    opbuild = {KIT_LABEL: "coldchain", "io.coldchain.train.image": image_identity(train.info.labels, train.info.id)}
    engine.images["coldchain-opbuild:cpu"] = ImageInfo("sha256:op", ("coldchain-opbuild:cpu",), opbuild, 2)
    clean(engine, tiny_project, PRUNE)
    assert "coldchain-opbuild:cpu" in engine.images
    dockerfile = tiny_project.root / "Dockerfile.train"
    dockerfile.write_text(dockerfile.read_text() + "# an edit\n")
    clean(engine, tiny_project, PRUNE)
    assert "coldchain-opbuild:cpu" not in engine.images and "coldchain-train:cpu" not in engine.images


def test_the_specs_judged_are_the_kit_images_and_every_matrix_environment(project):
    tags = {spec.tag() for spec in kit_specs(project)}
    assert {"coldchain-train:cuda", "coldchain-infer:cuda", "coldchain-bench:cpu"} <= tags
    assert {"coldchain-drift:tf2.7-py3.9", "coldchain-drift:arm64", "coldchain-drift:runtimes"} <= tags
