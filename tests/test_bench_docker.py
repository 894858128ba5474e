"""`make bench` in its quick mode: it runs end to end and writes a valid result file. No speed is
asserted (the machine is shared and noisy); speeds live in bench/results.json and the README."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import ROOT

pytestmark = pytest.mark.docker


def test_make_bench_quick_writes_a_valid_result_file(docker_engine, project, run_id, session_tags, kit_images,
                                                    tiny_chain, quick_reproducibility):
    """The reproducibility runs are the session's (quick_reproducibility, the same function and folder):
    the bench finds them by their key instead of training them again."""
    session_tags.append(f"{run_id}-bench:cpu")
    result_file = ROOT / "bench" / "results-quick.json"
    result_file.unlink(missing_ok=True)
    environment = dict(os.environ, COLDCHAIN_PREFIX=run_id)
    completed = subprocess.run(["make", "bench", f"OUT={tiny_chain}", "BENCH_ARGS=--quick --no-images --no-adopt --no-drift --no-transfer"], cwd=ROOT,
                               env=environment, capture_output=True, text=True, check=False, shell=False, timeout=1800)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(result_file.read_text())
    quick = results["inference"]["quick"]
    assert set(quick["variants"]) == {"tensorflow", "tensorflow_onednn_on", "tensorflow_onednn_off",
                                      "tensorflow_folded", "onnxruntime", "openvino", "openvino_bf16"}
    for name, variant in quick["variants"].items():
        assert variant["golden_ok"], name  # a wrong answer is never timed
        assert variant["batches"] and all(row["images_per_second"] > 0 for row in variant["batches"].values())
    assert 0 < quick["variants"]["tensorflow"]["batches"]["1"]["fraction_of_peak"] < 2
    assert quick["gflops_per_image"] > 0 and quick["peak_fp32"]["gflops"] > 0
    assert quick["tf_over_onnxruntime_at_batch_8"] > 0
    # Precision is declared and read back: fp32 is fp32; bf16 is bf16 where the CPU has it, else fp32.
    assert quick["variants"]["openvino"]["runtime"]["precision_effective"] == "fp32"
    assert quick["variants"]["openvino_bf16"]["runtime"]["precision_declared"] == "bf16"
    assert quick["variants"]["openvino_bf16"]["runtime"]["precision_effective"] in ("bf16", "fp32")
    assert quick["recommended_threads"] in quick["threads"]
    assert quick["first_prediction"]["models"]
    for name, model in quick["first_prediction"]["models"].items():  # the CLI as typed, phase by phase
        assert model["probe_run"]["golden_s"] > 0 and model["probe_run"]["total_s"] > 0, name
        assert model["kept_check_median"] and "golden_s" not in model["kept_check_median"], name
    assert quick["tensorflow_profile_top_ops"] and quick["tensorflow_profile_top_ops"][0]["share"] > 0
    assert results["meta"]["cores"] >= 1
    # TFLite beside TensorFlow fp32 from the same run: every row golden-checked, XNNPACK and the computed
    # precision read back, top-1 agreement with TensorFlow fp32 on held-out images beside the speed.
    tflite = results["tflite"]["quick"]
    assert set(tflite["rows"]) == {"tensorflow_fp32", "tflite_fp32", "tflite_int8"}
    for name, row in tflite["rows"].items():
        assert row["golden_ok"], (name, row.get("error"))
        assert row["batches"] and all(speed["images_per_second"] > 0 for speed in row["batches"].values())
    assert tflite["rows"]["tflite_fp32"]["runtime"]["xnnpack"]["enabled"] is True
    assert tflite["rows"]["tflite_int8"]["runtime"]["precision_effective"] == "int8"
    held = tflite["rows"]["tflite_int8"]["top1_agreement_vs_tensorflow_fp32"]["held_out"]
    assert held["images"] > 0 and 0 <= held["agreement"] <= 1
    # Named fastest only while it keeps fp32's answers; else listed as too far, whatever its speed.
    if held["agreement"] >= tflite["min_top1_agreement_for_speed"]:
        assert tflite["fastest_int8_at_batch_8"]["variant"] == "tflite_int8"
    else:
        assert tflite["fastest_int8_at_batch_8"] is None and tflite["int8_too_far_from_fp32"] == ["tflite_int8"]
    # Portable training gives the same model under both simulated CPU classes; the default mode really
    # computed differently under them (the forced oneDNN state shows in what each run recorded).
    reproducibility = results["reproducibility"]["quick"]
    assert reproducibility["identical_across_classes"]["portable"] is True
    default = reproducibility["runs"]["default"]
    assert "oneDNN off" in default["as-avx2"]["numerics"] and "oneDNN on" in default["as-avx512-vnni"]["numerics"]
    portable = reproducibility["runs"]["portable"]
    assert all("oneDNN off" in run["numerics"] and "threads 2/2" in run["numerics"] for run in portable.values())
    assert reproducibility["measured"]["runs"]["cpu_flags"], "dated, with the CPU flags that measured it"
    assert reproducibility["runs"] == quick_reproducibility[1]["runs"]
