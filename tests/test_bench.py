"""Benchmark bookkeeping without a daemon: the FP32 peak derivation and the summary arithmetic."""

from __future__ import annotations

from coldchain.bench import peak_fp32, summarize_inference


def test_peak_is_derived_from_the_cpu_and_documented():
    peak = peak_fp32()
    assert peak["cores"] >= 1 and peak["fp32_lanes"] in (4, 8, 16)
    expected = peak["cores"] * peak["ghz"] * peak["fp32_lanes"] * (2 if peak["fma"] else 1) * peak["fma_pipes_per_core"]
    assert abs(peak["gflops"] - expected) <= 0.1 + 0.001 * expected
    assert "cores" in peak["derivation"] and "lanes" in peak["derivation"]


def _variant(rates: dict[int, float], ok: bool = True) -> dict:
    return {"golden": {"ok": ok}, "flops": {"gflops_per_image": 7.0, "by_op": {"Conv2D": 7e9}},
            "batches": [{"batch": b, "images_per_second": r, "p50_ms": 1e3 * b / r, "p99_ms": 1e3 * b / r}
                        for b, r in rates.items()]}


def test_summary_sets_speed_against_peak_and_onnxruntime():
    variants = {"tensorflow": _variant({1: 10.0, 8: 14.0}), "onnxruntime": _variant({1: 12.0, 8: 20.0}),
                "tensorflow_onednn_on": _variant({8: 15.0}), "tensorflow_onednn_off": _variant({8: 14.0}),
                "tensorflow_folded": _variant({8: 16.0})}
    threads = {"intra1_inter1": {"batches": [{"batch": 8, "images_per_second": 8.0}]},
               "intra2_inter1": {"batches": [{"batch": 8, "images_per_second": 14.5}]}}
    peak = {"gflops": 140.0, "cores": 2}
    summary = summarize_inference(variants, threads, 224, {"seconds_median": 5.0}, peak, 2)
    assert summary["tf_over_onnxruntime_at_batch_8"] == 0.7
    assert summary["variants"]["tensorflow"]["batches"]["8"]["fraction_of_peak"] == 0.7  # 14 img/s x 7 GFLOP / 140
    assert summary["recommended_threads"] == "intra2_inter1"
    assert summary["gflops_per_image"] == 7.0
