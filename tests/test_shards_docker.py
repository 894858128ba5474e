"""A cross-section of the default matrix as 3 shards, two of them at the same time on this machine,
merged: the same report as an unsharded run of those cases in everything but timings. The cases cover
every kind the merge must carry: a kit image's and a lock's environment, cases sharing a container and
one alone, an environment override, freeze variants, expected failures, and ONNX Runtime, OpenVINO and
TFLite; all 38 would be four times the containers for the same merge code. The unsharded report is
make drift-test's (CI runs it just before), restricted to these cases, where it is current."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from coldchain.drift.assembly import summarise
from coldchain.drift.report import REPORT_HEATMAP, report_names
from coldchain.drift.shards import Shard
from coldchain.drift.variants import needed
from coldchain.environments.matrix import DEFAULT_VARIANT, OP_BUILD_ENV, Matrix, load_matrix
from conftest import ROOT, made_by_make_drift_test
from pngread import read_png

pytestmark = pytest.mark.docker
SHARDS = 3
# Five container groups (training; infer-cpu with four cases; infer-cpu with oneDNN off; the runtimes
# environment; ONNX Runtime alone), three environments, two freeze variants.
CASES = ("training-env", "infer-cpu", "one-thread", "gpu-pinned", "training-mode-graph", "onednn-off",
         "openvino-fp32", "tflite-int8", "onnxruntime-fp32")
SELECTED = [argument for case in CASES for argument in ("--case", case)]


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
    for env in report["environments"].values():
        # An image rebuilt from the same inputs (its fingerprint) is the same environment under a new id.
        for key in ("reused", "image_id"):
            env.pop(key, None)
    return report


def restricted(report: dict, matrix: Matrix) -> dict:
    """`report` as an unsharded run of `matrix`'s cases (some of those it holds) writes it: those cases,
    the environments and variants they need, and what a report derives from its cases."""
    envs, variants = needed(matrix)
    variants |= {DEFAULT_VARIANT} | {matrix.variants[name].source for name in variants
                                     if matrix.variants[name].reexport_env}
    names = [case.name for case in matrix.cases]
    cases = [case for case in report["cases"] if case["name"] in names]
    return {**report, **summarise(cases), "cases": cases, "matrix_cases": names,
            "environments": {name: env for name, env in report["environments"].items() if name in envs},
            "variants": {name: variant for name, variant in report["variants"].items() if name in variants}}


@pytest.fixture(scope="module")
def unsharded(docker_engine, run_id, session_tags, kit_images, tiny_chain, tmp_path_factory):
    """(model args, report of CASES, its prefix, out dir): make drift-test's when it is current, else one run here."""
    matrix = load_matrix(ROOT / "drift" / "matrix.toml").select(CASES)
    session_tags.extend(env.image_spec().tag(run_id) for env in matrix.envs.values())
    session_tags.append(f"{run_id}-{OP_BUILD_ENV}:cpu")
    out = tmp_path_factory.mktemp("shards") / "drift"
    out.mkdir()
    made = made_by_make_drift_test()
    if made is not None:
        model_args, report, prefix = ["--model", "out/model"], json.loads(made.read_text()), "coldchain"
    else:
        model_args = ["--model", str(tiny_chain / "model"), "--run", str(tiny_chain / "run")]
        made = out.parent / "unsharded" / "drift-report.json"
        code, stdout, stderr = finish(coldchain(["drift-test", *model_args, "--out", str(made.parent), "--json",
                                                 *SELECTED], run_id))
        assert code in (0, 1), stderr[-3000:]
        report, prefix = json.loads(stdout), run_id
    # The variants the unsharded run made (up to date for this model): the shards reuse them.
    (out / "models").symlink_to(made.parent / "models", target_is_directory=True)
    if (made.parent / "tflite").is_dir():  # and its TFLite conversions (made on this CPU): reused, not redone
        (out / "tflite").symlink_to(made.parent / "tflite", target_is_directory=True)
    return model_args, restricted(report, matrix), prefix, out


def test_three_shards_two_at_a_time_merge_into_the_unsharded_report(docker_engine, run_id, unsharded):
    model_args, whole, whole_prefix, out = unsharded
    args = ["drift-test", *model_args, "--out", str(out), "--json", *SELECTED]
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
    expected, got = comparable(whole, whole_prefix), comparable(merged, run_id)
    differing = sorted(key for key in set(expected) | set(got) if expected.get(key) != got.get(key))
    cases = [(a["name"], [k for k in set(a) | set(b) if a.get(k) != b.get(k)])
             for a, b in zip(expected.get("cases", []), got.get("cases", [])) if a != b]
    assert expected == got, f"differ in {differing}; cases {cases}"
    assert len(merged["timing"]["shards"]) == SHARDS
    for name in report_names().values():
        assert (merged_dir / name).is_file()
    width, height, _ = read_png(merged_dir / REPORT_HEATMAP)
    assert height == 40 + 22 * len(whole["cases"]) + 46
