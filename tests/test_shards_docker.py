"""A cross-section of the default matrix as 3 shards, two of them at the same time on this machine,
merged: the same report as an unsharded run of those cases in everything but timings. The cases cover
every kind the merge must carry: a kit image's and a lock's environment, cases sharing a container and
one alone, an environment override, freeze variants, expected failures, and ONNX Runtime, OpenVINO and
TFLite (its artefact converted once per run); all 38 would be as many containers again, for the same
merge code."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from coldchain.environments.matrix import load_matrix
from coldchain.drift.report import REPORT_HEATMAP, report_names
from coldchain.drift.shards import Shard
from conftest import ROOT
from pngread import read_png

pytestmark = pytest.mark.docker
SHARDS = 3
# Five container groups (training; infer-cpu with four cases; infer-cpu with oneDNN off; runtimes; ONNX
# Runtime alone), three environments, two freeze variants.
CASES = ("training-env", "infer-cpu", "one-thread", "gpu-pinned", "training-mode-graph", "onednn-off",
         "openvino-fp32", "tflite-int8", "onnxruntime-fp32")


def coldchain(args: list[str], prefix: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "coldchain", *args], cwd=ROOT, text=True,
                            env=dict(os.environ, COLDCHAIN_PREFIX=prefix),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(process: subprocess.Popen, timeout: float = 2400) -> tuple[int, str, str]:
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, stdout, stderr


def comparable(report: dict, prefix: str) -> dict:
    """Everything but timings (and the image prefix a test run tags its images with)."""
    text = json.dumps(report, sort_keys=True).replace(f'"{prefix}-', '"PREFIX-')
    report = json.loads(text)
    for key in ("timing", "generated"):
        report.pop(key, None)
    for case in report["cases"]:
        for key in ("timing", "seconds", "latency"):
            case.pop(key, None)
        (case.get("golden") or {}).pop("seconds", None)
        # Whether ONNX Runtime's conversion came from the run's cache: the unsharded run made it, the shards keep it.
        (case.get("runtime") or {}).pop("conversion", None)
    for env in report["environments"].values():
        # An image rebuilt from the same inputs (its fingerprint) is the same environment under a new id.
        for key in ("reused", "image_id"):
            env.pop(key, None)
    return report


@pytest.fixture(scope="module")
def unsharded(docker_engine, run_id, session_tags, kit_images, tiny_chain, tmp_path_factory):
    """(drift-test arguments, report, out dir): the selected cases unsharded, on the session's tiny chain;
    the shards reuse its variants and TFLite conversions from the same out dir, as CI jobs share them."""
    matrix = load_matrix(ROOT / "drift" / "matrix.toml").select(CASES)
    session_tags.extend(env.image_spec().tag(run_id) for env in matrix.envs.values())
    out = tmp_path_factory.mktemp("shards") / "drift"
    out.mkdir()
    args = ["drift-test", "--model", str(tiny_chain / "model"), "--run", str(tiny_chain / "run"), "--out", str(out),
            "--json", *(argument for case in CASES for argument in ("--case", case))]
    code, stdout, stderr = finish(coldchain(args, run_id))
    assert code in (0, 1), stderr[-3000:]
    whole = json.loads(stdout)
    assert whole["matrix_cases"] == list(CASES)
    return args, whole, out


def test_three_shards_two_at_a_time_merge_into_the_unsharded_report(docker_engine, run_id, unsharded):
    args, whole, out = unsharded
    # Shards 1 and 2 side by side, then 3 (this machine has 2 cores); the third through the CI variables.
    first, second = (coldchain(args + ["--shard", f"{index}/{SHARDS}"], run_id) for index in (1, 2))
    results = [finish(first), finish(second)]
    third = subprocess.Popen([sys.executable, "-m", "coldchain", *args], cwd=ROOT, text=True,
                             env=dict(os.environ, COLDCHAIN_PREFIX=run_id, JOB_COMPLETION_INDEX="2",
                                      COLDCHAIN_SHARDS=str(SHARDS)),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    results.append(finish(third))
    partial_cases = []
    for index, (code, stdout, stderr) in enumerate(results, start=1):
        assert code in (0, 1), stderr[-3000:]
        report = json.loads(stdout)
        assert report["shard"] == {"index": index, "total": SHARDS, "cases": [c["name"] for c in report["cases"]]}
        assert code == (0 if report["ok"] else 1)
        partial_cases.append(report["shard"]["cases"])
        for name in report_names(Shard(index, SHARDS).suffix).values():
            assert (out / name).is_file()
    assert all(partial_cases) and sorted(sum(partial_cases, [])) == sorted(whole["matrix_cases"])
    assert not (out / "drift-report.json").exists()  # a shard never writes the whole run's names

    merged_dir = out.parent / "merged"
    code, stdout, stderr = finish(coldchain(["drift-merge", str(out), "--out", str(merged_dir), "--json"], run_id))
    assert code == (0 if whole["ok"] else 1), stderr[-3000:]
    merged = json.loads(stdout)
    assert json.loads((merged_dir / "drift-report.json").read_text()) == merged
    expected, got = comparable(whole, run_id), comparable(merged, run_id)
    differing = sorted(key for key in set(expected) | set(got) if expected.get(key) != got.get(key))
    cases = [(a["name"], [k for k in set(a) | set(b) if a.get(k) != b.get(k)])
             for a, b in zip(expected.get("cases", []), got.get("cases", [])) if a != b]
    assert expected == got, f"differ in {differing}; cases {cases}"
    assert len(merged["timing"]["shards"]) == SHARDS
    for name in report_names().values():
        assert (merged_dir / name).is_file()
    width, height, _ = read_png(merged_dir / REPORT_HEATMAP)
    assert height == 40 + 22 * len(whole["cases"]) + 46
