"""Images verified by content, with the fake engine: a build labels the image with its file record's
sha256; `images --verify` runs each image, re-hashes its files against the record and the record
against the label, and exits 20 (contract Exit.IMAGE_CORRUPT) on any difference; `images --force`
rebuilds without Docker's layer cache. Every kit Dockerfile writes the record."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from coldchain.cli import main
from coldchain.config import IMAGES
from coldchain.contract import FILES_RECORD, Exit
from coldchain.engine import RunResult
from coldchain.environments.files_record import FILES_LABEL, verify_image
from coldchain.environments.images import BuildOptions, build_image
from coldchain.steps.environment import ImagesRequest, build_named_images
from conftest import ROOT
from fake_engine import FakeEngine

RECORD_DIGEST = "ab" * 32


def checking_container(stdout_by_image: dict, default: str = ""):
    """A container that answers the record's digest (at build time) and the verify script."""
    def handler(spec):
        if spec.command[0] == "sha256sum":
            return RunResult(0, f"{RECORD_DIGEST}  {FILES_RECORD}\n", "")
        if spec.command[0] == "sh":
            return RunResult(0, stdout_by_image.get(spec.image, default), "")
        return RunResult(0, "3.11.2\n", "")  # the base's python3 --version
    return handler


def built(tiny_project, engine, name="infer-cpu", **options):
    return build_image(engine, tiny_project, IMAGES[name], BuildOptions(prefix="kit", **options))


def test_every_kit_dockerfile_writes_the_record_last():
    for dockerfile in sorted(ROOT.glob("Dockerfile.*")):
        text = dockerfile.read_text()
        assert FILES_RECORD in text, dockerfile.name
        # After every other change to the files, just before the image's user is set.
        assert text.rindex(FILES_RECORD) > max(text.rindex("COPY"), text.rindex("RUN ")) - 400
        assert text.index(FILES_RECORD) < text.rindex("USER ")


def test_a_build_labels_the_image_with_its_records_digest(tiny_project):
    engine = FakeEngine(registry=True)
    engine.run_handler = checking_container({})
    image = built(tiny_project, engine)
    assert image.info.labels[FILES_LABEL] == RECORD_DIGEST and engine.labelled == ["kit-infer:cpu"]
    assert engine.inspect_image("kit-infer:cpu").labels[FILES_LABEL] == RECORD_DIGEST


def test_an_image_whose_record_cannot_be_read_is_a_failed_build(tiny_project):
    from coldchain.errors import BuildError

    engine = FakeEngine(registry=True)
    engine.run_handler = lambda spec: RunResult(1, "", f"sha256sum: {FILES_RECORD}: No such file or directory") \
        if spec.command[0] == "sha256sum" else RunResult(0, "3.11.2\n", "")
    with pytest.raises(BuildError) as caught:
        built(tiny_project, engine)
    assert FILES_RECORD in caught.value.message


def test_verify_passes_when_files_and_record_agree(tiny_project):
    engine = FakeEngine(registry=True)
    engine.run_handler = checking_container({}, default=RECORD_DIGEST + "\n")
    image = built(tiny_project, engine)
    result = verify_image(engine, image.tag)
    assert result.files_ok and result.mismatches == ()
    assert engine.runs[-1].network == "none" and engine.runs[-1].read_only_root  # hardened like every run


@pytest.mark.parametrize("stdout, expected", [
    (RECORD_DIGEST + "\n/opt/venv/lib/python3.11/site-packages/numpy/core/_multiarray_umath.so: FAILED\n",
     "/opt/venv/lib/python3.11/site-packages/numpy/core/_multiarray_umath.so: FAILED"),
    (RECORD_DIGEST + "\n/opt/coldchain/scripts/incontainer/contract.py: FAILED open or read\n",
     "/opt/coldchain/scripts/incontainer/contract.py: FAILED open or read"),
    (RECORD_DIGEST + "\n/opt/venv/lib/python3.11/site-packages/evil.pth: ADDED\n",
     "/opt/venv/lib/python3.11/site-packages/evil.pth: ADDED"),
    ("cd" * 32 + "\n", f"{FILES_RECORD}: FAILED (its sha256 is not the label's)"),
], ids=["changed", "missing", "added", "record-changed"])
def test_verify_reports_each_difference_and_exits_20(tiny_project, monkeypatch, stdout, expected):
    engine = FakeEngine(registry=True)
    engine.run_handler = checking_container({}, default=RECORD_DIGEST + "\n")
    image = built(tiny_project, engine)
    engine.run_handler = checking_container({image.info.id: stdout})
    result = verify_image(engine, image.tag)
    assert not result.files_ok and result.mismatches == (expected,)

    (tiny_project.root / "coldchain").mkdir()  # a checkout, as the command finds one
    monkeypatch.setattr("coldchain.cli.base.connect", lambda: engine)
    monkeypatch.setattr("coldchain.environments.images.resolve_base", lambda *args, **kwargs: image.base)
    outcome = CliRunner().invoke(main, ["images", "--project", str(tiny_project.root), "--image", "infer-cpu",
                                        "--prefix", "kit", "--verify"], catch_exceptions=False)
    assert outcome.exit_code == Exit.IMAGE_CORRUPT == 20, outcome.output
    assert expected in outcome.output and "images --force" in outcome.output


def test_an_image_built_before_records_is_not_verified(tiny_project):
    engine = FakeEngine(registry=True)
    engine._store("old-infer:cpu", {"io.coldchain.kit": "coldchain"})
    result = verify_image(engine, "old-infer:cpu")
    assert not result.files_ok and FILES_LABEL in result.mismatches[0] and not engine.runs


def test_verify_through_the_step_marks_each_image_verified(tiny_project):
    engine = FakeEngine(registry=True)
    engine.run_handler = checking_container({}, default=RECORD_DIGEST + "\n")
    results = build_named_images(engine, tiny_project, ImagesRequest(names=("train-cpu", "infer-cpu"), prefix="kit",
                                                                     verify=True))
    assert [result["verified"] for result in results] == [True, True]
    scripts = [spec for spec in engine.runs if spec.command[0] == "sh"]
    assert sorted(spec.image for spec in scripts) == sorted(result["id"] for result in results)


def test_force_rebuilds_without_the_layer_cache(tiny_project):
    engine = FakeEngine(registry=True)
    engine.run_handler = checking_container({})
    build_named_images(engine, tiny_project, ImagesRequest(names=("infer-cpu",), prefix="kit"))
    build_named_images(engine, tiny_project, ImagesRequest(names=("infer-cpu",), prefix="kit", force=True))
    assert len(engine.builds) == 2
    assert [build["nocache"] for build in engine.builds] == [False, True]


def test_the_script_hashes_the_recorded_trees_quietly():
    from coldchain.environments.files_record import RECORDED_TREES, VERIFY_SCRIPT

    assert "sha256sum -c --quiet" in VERIFY_SCRIPT and all(tree in VERIFY_SCRIPT for tree in RECORDED_TREES)
    for dockerfile in sorted(ROOT.glob("Dockerfile.*")):
        assert f"find {' '.join(RECORDED_TREES)} -type f" in dockerfile.read_text(), dockerfile.name
