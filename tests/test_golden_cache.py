"""Which kept golden check belongs to which model, image and runtime, and what is kept."""

from __future__ import annotations

import json

import pytest

from coldchain.config import Project
from coldchain.contract import KeptGolden
from coldchain.steps.golden_cache import cache_file, remember

FP32 = {"name": "tensorflow", "precision": "fp32", "bf16_tolerance": 0.03}


def model(tmp_path, golden: bytes = b"g"):
    directory = tmp_path / "model"
    directory.mkdir(exist_ok=True)
    (directory / "manifest.json").write_text('{"model": {"sha256": "abc"}}')
    (directory / "golden.npz").write_bytes(golden)
    return directory


def test_every_input_that_decides_the_numbers_is_in_the_key(tmp_path):
    project = Project(tmp_path)
    directory = model(tmp_path)
    base = cache_file(project, directory, "sha256:image", FP32)
    assert base == cache_file(project, directory, "sha256:image", dict(FP32))
    assert base != cache_file(project, directory, "sha256:other-image", FP32)
    assert base != cache_file(project, directory, "sha256:image", {**FP32, "precision": "bf16"})
    assert base != cache_file(project, directory, "sha256:image", {**FP32, "bf16_tolerance": 0.05})
    assert base != cache_file(project, model(tmp_path, golden=b"regenerated"), "sha256:image", FP32)
    (directory / "manifest.json").write_text('{"model": {"sha256": "def"}}')  # another model.pb
    assert base != cache_file(project, directory, "sha256:image", FP32)


def test_only_a_fresh_passing_check_is_kept(tmp_path):
    kept = tmp_path / "kept.json"
    summary = {"model": "abc", "numerics": {"onednn": {"enabled": True}}, "runtime": {"name": "tensorflow"},
               "golden": {"ok": False}}
    remember(kept, summary)
    assert not kept.exists()
    remember(kept, {**summary, "golden": {"ok": True, "cached": {"verified_at": "earlier"}}})
    assert not kept.exists(), "a check that was itself kept is not re-dated"
    remember(kept, {**summary, "golden": {"ok": True, "top1": {"agree": 4}}})
    entry = json.loads(kept.read_text())
    assert entry["model"] == "abc" and entry["numerics"] == summary["numerics"] and entry["verified_at"]


def test_what_the_host_keeps_is_what_the_container_reads_back(tmp_path):
    kept = tmp_path / "kept.json"
    summary = {"model": "abc", "numerics": {"onednn": {"enabled": True}}, "runtime": {"name": "tensorflow"},
               "golden": {"ok": True, "top1": {"agree": 4}}, "images": 3}
    remember(kept, summary)
    earlier = KeptGolden.from_json(kept.read_text())
    assert earlier == KeptGolden(golden=summary["golden"], model="abc", numerics=summary["numerics"],
                                 runtime=summary["runtime"], verified_at=earlier.verified_at)
    assert json.loads(kept.read_text()) == earlier.to_dict() and set(earlier.to_dict()) == {
        "golden", "model", "numerics", "runtime", "verified_at"}
    assert earlier.differences(summary) == []
    assert earlier.differences({**summary, "numerics": {"onednn": {"enabled": False}}, "model": "def"}) == [
        "model", "numerics"]
    assert earlier.reused() == {"ok": True, "top1": {"agree": 4}, "cached": {"verified_at": earlier.verified_at}}


@pytest.mark.parametrize("text", ["[]", "{}", '{"golden": null, "model": "abc"}', "not json"])
def test_a_kept_check_without_its_golden_result_is_refused(text):
    with pytest.raises(ValueError):
        KeptGolden.from_json(text)
