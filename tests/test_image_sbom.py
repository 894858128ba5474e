"""Each image's CycloneDX SBOM, made from the hashed lock it was built from and stored in its labels by
the label-only build that adds the file record's label (fake engine, no daemon): `coldchain sbom
IMAGE` prints it, `--lock` and `images --verify` check it against the lock pin by pin (exit 20)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from dataclasses import replace

import pytest
from click.testing import CliRunner

from coldchain.cli import main
from coldchain.config import IMAGES, ImageSpec, LockSpec
from coldchain.contract import FILES_RECORD, Exit
from coldchain.engine import RunResult
from coldchain.environments.files_record import FILES_LABEL
from coldchain.environments.image_sbom import (SBOM_FORMAT_LABEL, SBOM_LABEL, SBOM_SHA256_LABEL, image_sbom,
                                               sbom_mismatches)
from coldchain.environments.images import BuildOptions, build_image
from coldchain.environments.locks import input_sha256, parse_lock, stamp_lock
from coldchain.environments.sbom import sbom_bytes
from coldchain.errors import ImageCorrupt
from coldchain.steps.environment import ImagesRequest, build_named_images
from fake_engine import FakeEngine

RECORD_DIGEST = "ab" * 32


def container(spec):
    """The record's digest at build time, a clean verify script run, the base's python3 --version."""
    if spec.command[0] == "sha256sum":
        return RunResult(0, f"{RECORD_DIGEST}  {FILES_RECORD}\n", "")
    if spec.command[0] == "sh":
        return RunResult(0, RECORD_DIGEST + "\n", "")
    return RunResult(0, "3.11.2\n", "")


@pytest.fixture
def engine():
    fake = FakeEngine(registry=True)
    fake.run_handler = container
    return fake


def built(project, engine, spec=IMAGES["infer-cpu"], **options):
    return build_image(engine, project, spec, BuildOptions(prefix="kit", **options))


def relabelled(engine, tag: str, **labels):
    """The image under `tag` with some labels changed, as a tampered or older image would carry them."""
    info = engine.images[tag]
    engine.images[tag] = replace(info, labels={**info.labels, **labels})
    return engine.images[tag]


def packed(document: bytes) -> str:
    return base64.b64encode(gzip.compress(document)).decode()


def test_a_build_stores_the_locks_sbom_in_the_label_only_build(tiny_project, engine):
    image = built(tiny_project, engine)
    lock = tiny_project.path("requirements-infer.lock")
    assert len(engine.builds) == 1 and engine.labelled == ["kit-infer:cpu"]  # no second heavy build
    assert SBOM_LABEL not in engine.builds[0]["labels"]  # made before, stored after: one step, with the record
    assert engine.builds[0]["labels"][SBOM_FORMAT_LABEL] == image.info.labels[SBOM_FORMAT_LABEL]
    labels = engine.inspect_image("kit-infer:cpu").labels
    assert gzip.decompress(base64.b64decode(labels[SBOM_LABEL])) == sbom_bytes(lock)
    assert labels[SBOM_SHA256_LABEL] == hashlib.sha256(sbom_bytes(lock)).hexdigest()
    assert labels[FILES_LABEL] == RECORD_DIGEST
    assert image_sbom(image.info, image.tag) == sbom_bytes(lock)
    assert sbom_mismatches(image.info, image.tag, parse_lock(lock)) == ()


def test_an_image_built_before_images_carried_an_sbom_is_rebuilt(tiny_project, engine):
    image = built(tiny_project, engine)
    old = {key: value for key, value in image.info.labels.items()
           if key not in (SBOM_FORMAT_LABEL, SBOM_LABEL, SBOM_SHA256_LABEL)}
    engine.images["kit-infer:cpu"] = replace(image.info, labels=old)
    again = built(tiny_project, engine)
    assert not again.reused and len(engine.builds) == 2 and SBOM_LABEL in again.info.labels
    assert built(tiny_project, engine).reused  # and then it is up to date


def test_an_environment_from_a_users_lock_carries_that_locks_sbom(tiny_project, engine, tmp_path):
    """adopt --requirements (and a drift environment) build from a lock outside LOCKS: its SBOM."""
    directory = tmp_path / "model" / "environment"
    directory.mkdir(parents=True)
    (directory / "requirements.in").write_text("numpy\n")
    lines = tiny_project.path("requirements-infer.lock").read_text().splitlines()
    start = next(number for number, line in enumerate(lines) if line.startswith("numpy=="))
    numpy = "\n".join(lines[start:start + 2])  # the pin and its hash
    lock_spec = LockSpec("user-mine", str(directory / "requirements.in"), str(directory / "requirements.lock"), "3.11")
    (directory / "requirements.lock").write_text(stamp_lock("#\n" + numpy + "\n", input_sha256(tiny_project,
                                                                                                lock_spec)))
    spec = ImageSpec("infer", "cpu", lock_spec.name, "bookworm", env="mine", lock_spec=lock_spec)
    image = built(tiny_project, engine, spec)
    components = json.loads(image_sbom(image.info, image.tag))["components"]
    assert [(component["name"], component["version"]) for component in components] == [("numpy", "1.26.4")]
    assert image.info.labels[SBOM_SHA256_LABEL] == hashlib.sha256(sbom_bytes(directory / "requirements.lock")
                                                                  ).hexdigest()


def other_lock(tiny_project, tmp_path, old: str, new: str):
    path = tmp_path / "other.lock"
    path.write_text(tiny_project.path("requirements-infer.lock").read_text().replace(old, new))
    return parse_lock(path)


def test_each_difference_between_the_sbom_and_the_lock_is_named(tiny_project, engine, tmp_path):
    image = built(tiny_project, engine)
    lock = parse_lock(tiny_project.path("requirements-infer.lock"))
    newer = other_lock(tiny_project, tmp_path, "numpy==1.26.4", "numpy==2.0.0")
    assert "SBOM: numpy==1.26.4, but other.lock pins 2.0.0" in sbom_mismatches(image.info, image.tag, newer)
    pin = lock.pins["numpy"]
    rehashed = other_lock(tiny_project, tmp_path, sorted(pin.hashes)[0].split(":")[1], "0" * 64)
    assert sbom_mismatches(image.info, image.tag, rehashed)[-1] == \
        "SBOM: numpy==1.26.4: its wheel hashes are not those other.lock pins"
    document = json.loads(image_sbom(image.info, image.tag))
    document["components"] = [c for c in document["components"] if c["name"] != "numpy"]
    document["components"].append({**document["components"][0], "name": "evil", "version": "1.0"})
    text = json.dumps(document).encode()
    edited = relabelled(engine, image.tag, **{SBOM_LABEL: packed(text),
                                               SBOM_SHA256_LABEL: hashlib.sha256(text).hexdigest()})
    found = sbom_mismatches(edited, image.tag, lock)
    assert any("numpy==1.26.4 is in requirements-infer.lock but not in the SBOM" in line for line in found)
    assert any("evil==1.0 is not in requirements-infer.lock" in line for line in found)


@pytest.mark.parametrize("labels, wanted", [
    ({SBOM_LABEL: ""}, "has no io.coldchain.sbom label"),
    ({SBOM_LABEL: "not base64!"}, "does not decode"),
    ({SBOM_SHA256_LABEL: "cd" * 32}, "sha256 is not its io.coldchain.sbom.sha256 label's"),
], ids=["missing", "garbled", "swapped"])
def test_a_missing_garbled_or_swapped_sbom_label_is_refused(tiny_project, engine, labels, wanted):
    image = built(tiny_project, engine)
    tampered = relabelled(engine, image.tag, **labels)
    with pytest.raises(ImageCorrupt, match=wanted):
        image_sbom(tampered, image.tag)
    lock = parse_lock(tiny_project.path("requirements-infer.lock"))
    assert wanted in sbom_mismatches(tampered, image.tag, lock)[0]


def invoke(tiny_project, monkeypatch, engine, *args):
    (tiny_project.root / "coldchain").mkdir(exist_ok=True)  # a checkout, as the command finds one
    monkeypatch.setattr("coldchain.cli.base.connect", lambda: engine)
    return CliRunner().invoke(main, [*args, "--project", str(tiny_project.root)], catch_exceptions=False)


def test_the_sbom_command_prints_it_and_checks_it_against_a_lock(tiny_project, engine, monkeypatch, tmp_path):
    image = built(tiny_project, engine)
    lock = tiny_project.path("requirements-infer.lock")
    printed = invoke(tiny_project, monkeypatch, engine, "sbom", image.tag)
    assert printed.exit_code == 0 and json.loads(printed.stdout) == json.loads(sbom_bytes(lock))
    assert invoke(tiny_project, monkeypatch, engine, "sbom", image.tag, "--lock", str(lock)).exit_code == 0
    other_lock(tiny_project, tmp_path, "numpy==1.26.4", "numpy==2.0.0")
    refused = invoke(tiny_project, monkeypatch, engine, "sbom", image.tag, "--lock", str(tmp_path / "other.lock"))
    assert refused.exit_code == Exit.IMAGE_CORRUPT and "numpy==1.26.4, but other.lock pins 2.0.0" in refused.output
    assert refused.stdout == ""  # nothing printed of an SBOM that does not match
    missing = invoke(tiny_project, monkeypatch, engine, "sbom", "nothing:here")
    assert missing.exit_code == Exit.USAGE and "nothing:here: no such image" in missing.output


def test_images_verify_checks_the_sbom_against_the_lock(tiny_project, engine, monkeypatch):
    results = build_named_images(engine, tiny_project, ImagesRequest(names=("infer-cpu",), prefix="kit",
                                                                     verify=True))
    assert results[0]["verified"]
    base = built(tiny_project, engine).base
    document = sbom_bytes(tiny_project.path("requirements-infer.lock")).replace(b'"1.26.4"', b'"1.26.3"')
    relabelled(engine, "kit-infer:cpu", **{SBOM_LABEL: packed(document),
                                           SBOM_SHA256_LABEL: hashlib.sha256(document).hexdigest()})
    monkeypatch.setattr("coldchain.environments.images.resolve_base",
                        lambda *args, **kwargs: base)
    outcome = invoke(tiny_project, monkeypatch, engine, "images", "--image", "infer-cpu", "--prefix", "kit",
                     "--verify")
    assert outcome.exit_code == Exit.IMAGE_CORRUPT, outcome.output
    assert "or from their lock (SBOM)" in outcome.output
    assert "numpy==1.26.3, but requirements-infer.lock pins 1.26.4" in outcome.output


def test_an_image_without_an_sbom_is_named_where_building_is_not_allowed(tiny_project, engine):
    """A job that loaded or pulled images made before they carried an SBOM is told why they do not fit."""
    from coldchain.errors import ImageNotAvailable

    image = built(tiny_project, engine)
    engine.images["kit-infer:cpu"] = replace(image.info, labels={key: value for key, value in image.info.labels.items()
                                                                 if key != SBOM_FORMAT_LABEL})
    with pytest.raises(ImageNotAvailable, match="its SBOM label .built before images carried one. differ"):
        built(tiny_project, engine, build=False)


def test_containers_get_the_images_labels_without_the_sbom_itself(tiny_project, engine):
    """The labels travel to every container (and into manifests and reports) as one environment string,
    which exec refuses past 128 KiB: the SBOM's sha256 goes, the SBOM does not."""
    from coldchain.contract import ENV_IMAGE_LABELS
    from coldchain.steps.runner import Image, ModuleRun, spec_for

    image = built(tiny_project, engine)
    spec = spec_for(ModuleRun(image=Image.of(image), module="probe", arguments=()))
    passed = json.loads(spec.environment[ENV_IMAGE_LABELS])
    assert SBOM_LABEL not in passed and passed[SBOM_SHA256_LABEL] == image.info.labels[SBOM_SHA256_LABEL]
    assert passed[FILES_LABEL] == RECORD_DIGEST
