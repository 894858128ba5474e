"""Benchmark bookkeeping without a daemon: the FP32 peak derived from a CPU description, the summary
arithmetic, and results.json keeping every entry with its date and CPU."""

from __future__ import annotations

import json

import pytest

from coldchain import hostinfo
from coldchain.bench import results as bench_results
from coldchain.bench.inference import summarize_inference

AVX2_CPU = ["processor\t: 0", "model name\t: AMD EPYC", "cpu MHz\t\t: 2445.000",
            "flags\t\t: fpu sse2 avx avx2 fma"]
VNNI_CPU = ["processor\t: 0", "model name\t: AMD EPYC", "flags\t\t: fpu avx avx2 fma avx512f avx512_vnni avx512_bf16"]


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(hostinfo, "cores", lambda: 2)


def test_peak_is_derived_from_the_cpu_description(monkeypatch, two_cores):
    monkeypatch.setattr(hostinfo, "_cpuinfo", lambda: AVX2_CPU)
    peak = hostinfo.derived_peak_fp32()
    # 2 cores x 2.445 GHz x 8 FP32 lanes (AVX2) x 2 (FMA) x 2 pipes
    assert peak["gflops"] == 156.5 and peak["fp32_lanes"] == 8 and "2.445 GHz" in peak["derivation"]
    assert hostinfo.cpu_class() == "avx2" and hostinfo.numerics_flags() == ["avx", "avx2", "fma"]


def test_a_cpu_without_a_clock_has_no_derived_peak(monkeypatch, two_cores):
    monkeypatch.setattr(hostinfo, "_cpuinfo", lambda: VNNI_CPU)
    peak = hostinfo.derived_peak_fp32()
    assert peak["gflops"] is None and peak["fp32_lanes"] == 16 and "no clock" in peak["derivation"]
    assert hostinfo.cpu_class() == "avx512-vnni"


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
    no_peak = summarize_inference(variants, threads, 224, {"seconds_median": 5.0}, {"gflops": None}, 2)
    assert no_peak["variants"]["tensorflow"]["batches"]["8"]["fraction_of_peak"] is None


def test_results_keep_every_entry_with_its_date_and_cpu(project_copy, monkeypatch):
    """A later run that measures only some entries must not erase the others (the README's cold-build
    and CUDA numbers came from separate runs), and each entry says when and where it was measured."""
    (project_copy.root / "bench").mkdir()
    monkeypatch.setattr(bench_results, "measured_on", lambda: {"date": "2026-11-01", "cpu_flags": ["avx2"]})
    bench_results.write_results(project_copy, {"images": bench_results.stamp(
        {"train-cuda": {"cold_build_s": 800.0}, "train-cpu": {"cold_build_s": 120.0}})})
    monkeypatch.setattr(bench_results, "measured_on", lambda: {"date": "2026-11-28", "cpu_flags": ["avx512_vnni"]})
    target = bench_results.write_results(project_copy, {"images": bench_results.stamp(
        {"train-cpu": {"warm_rebuild_s": 80.0}})})
    images = json.loads(target.read_text())["images"]
    first = {"date": "2026-11-01", "cpu_flags": ["avx2"]}
    assert images["train-cuda"] == {"cold_build_s": 800.0, "measured": {"cold_build_s": first}}
    assert images["train-cpu"]["cold_build_s"] == 120.0 and images["train-cpu"]["warm_rebuild_s"] == 80.0
    assert images["train-cpu"]["measured"] == {"cold_build_s": first, "warm_rebuild_s": {
        "date": "2026-11-28", "cpu_flags": ["avx512_vnni"]}}


def test_the_benchmarks_page_is_written_from_the_results_files_only(project):
    """bench/README.md is what render() makes of bench/results.json and bench/ci-*.json: a number
    edited by hand on the page, or a results file changed without rewriting it, fails here."""
    from coldchain.bench.page import PAGE, ci_runs, render

    results = json.loads(project.path("bench/results.json").read_text())
    assert project.path(f"bench/{PAGE}").read_text() == render(results, ci_runs(project.path("bench")))


def test_the_benchmarks_page_shows_each_value_with_its_date_and_cpu():
    from coldchain.bench.page import render
    from coldchain.bench.results import stamp

    drift = {"cases": 4, "isolated": {"wall_s": 80.0, "cases_s": 60.0, "ok": True,
                                      "per_case": {"container_overhead_s": 4.0, "import_tensorflow_s": 3.0,
                                                   "total_s": 15.0, "cases": 4, "containers": 4}},
             "shared": {"wall_s": 40.0, "cases_s": 20.0, "ok": True,
                        "per_case": {"container_overhead_s": 1.0, "import_tensorflow_s": 0.75, "total_s": 5.0,
                                     "cases": 4, "containers": 1}},
             "shards_2": {"side_by_side_wall_s": 33.0, "merge_wall_s": 1.5, "merge_s": 0.01, "ok": True,
                          "shard_cases_s": [12.0, 14.0], "shard_cases": [2, 2]}}
    page = render({"drift": stamp({"full": drift})}, [("ci-avx2.json", {
        "date": "2026-11-28T00:00:00Z", "cpu_flags": "avx2", "docker_images_before": 0,
        "stages_s": {"freeze": 600, "infer": 30, "drift-test": 900, "test": 1500}, "total_s": 3030, "commit": "abc"})])
    assert "| isolated | 4 | 4 |" in page and "| shared | 1 | 1 |" in page
    assert "| 2 | 33 | 12, 14 | 2, 2 | 0.01 (1.5) | ok |" in page
    assert "50.5" in page  # 3030 s in minutes
    assert "flags" in page and "date not recorded" not in page


def test_the_fastest_runtime_is_picked_among_golden_passes_per_precision():
    from coldchain.bench.inference import summarize_inference

    def runtime(effective: str, declared: str = "fp32") -> dict:
        return {"runtime": {"precision_effective": effective, "precision_declared": declared}}

    variants = {"tensorflow": _variant({8: 20.0}), "onnxruntime": _variant({8: 30.0}),
                "openvino": {**_variant({8: 25.0}), **runtime("fp32")},
                "openvino_bf16": {**_variant({8: 50.0}), **runtime("bf16", "bf16")},
                "broken": _variant({8: 99.0}, ok=False)}
    summary = summarize_inference(variants, {"intra0_inter0": _variant({8: 1.0})}, 64, {}, {"gflops": 100.0}, 2)
    assert summary["fastest_fp32_at_batch_8"] == {"variant": "onnxruntime", "images_per_second": 30.0}
    assert summary["fastest_bf16_at_batch_8"] == {"variant": "openvino_bf16", "images_per_second": 50.0,
                                                  "over_tensorflow_fp32": 2.5}
    # A CPU without bf16: the declared-bf16 variant reports fp32 and competes there.
    variants["openvino_bf16"] = {**_variant({8: 26.0}), **runtime("fp32", "bf16")}
    summary = summarize_inference(variants, {"intra0_inter0": _variant({8: 1.0})}, 64, {}, {"gflops": 100.0}, 2)
    assert summary["fastest_bf16_at_batch_8"] is None and summary["fastest_fp32_at_batch_8"]["variant"] == "onnxruntime"


def tflite_row(speed: float, precision: str, xnnpack: bool | None, ok: bool = True, held: tuple = (99, 100)) -> dict:
    runtime = {"name": "tflite" if xnnpack is not None else "tensorflow", "precision_declared": precision,
               "precision_effective": precision, **({"xnnpack": {"enabled": xnnpack}} if xnnpack is not None else {})}
    return {"golden": {"ok": ok}, "runtime": runtime,
            "batches": [{"batch": b, "images_per_second": speed * b ** 0.1, "p50_ms": 1.0} for b in (1, 8, 32)],
            "top1_agreement_vs_tensorflow_fp32": {"golden_images": 1.0, "golden_image_count": 10,
                                                  "held_out": {"agree": held[0], "images": held[1],
                                                               "agreement": held[0] / held[1]}}}


def test_tflite_rows_sit_beside_tensorflow_fp32_and_int8_is_set_against_it():
    from coldchain.bench.page import render
    from coldchain.bench.results import stamp
    from coldchain.bench.tflite import summarize_tflite

    rows = {"tensorflow_fp32": tflite_row(50.0, "fp32", None), "tflite_fp32": tflite_row(40.0, "fp32", True),
            "tflite_fp32_no_xnnpack": tflite_row(10.0, "fp32", False), "tflite_int8": tflite_row(150.0, "int8", True)}
    summary = summarize_tflite(rows, 224)
    best = summary["fastest_int8_at_batch_8"]
    assert best["variant"] == "tflite_int8" and best["over_tensorflow_fp32"] == 3.0
    # An int8 row that failed its golden check is never the fastest: it was not timed as right.
    failed = summarize_tflite({**rows, "tflite_int8": tflite_row(150.0, "int8", True, ok=False)}, 224)
    assert failed["fastest_int8_at_batch_8"] is None
    # Fast but changing fp32's top-1 on 8 of 100 held-out images: never named fastest, listed as too far.
    wrong = summarize_tflite({**rows, "tflite_int8": tflite_row(150.0, "int8", True, held=(92, 100))}, 224)
    assert wrong["fastest_int8_at_batch_8"] is None and wrong["int8_too_far_from_fp32"] == ["tflite_int8"]
    assert "Not counted for speed" in render({"tflite": stamp({"full": wrong})}, [])
    page = render({"tflite": stamp({"full": summary})}, [])
    assert "| tflite_int8 | int8 | on | ok | 1 | 99/100 |" in page
    assert "| tflite_fp32_no_xnnpack | fp32 | off | ok |" in page and "3x TensorFlow fp32" in page
    assert "date not recorded" not in page


def test_openvino_and_onnxruntime_int8_rows_compete_with_tflite_s_and_are_converted_with_it(tmp_path, monkeypatch):
    from coldchain.bench import tflite as section

    rows = {"tensorflow_fp32": tflite_row(50.0, "fp32", None), "tflite_int8": tflite_row(150.0, "int8", True),
            "openvino_int8": {**tflite_row(200.0, "int8", None), "runtime": {
                "name": "openvino", "precision_declared": "int8", "precision_effective": "int8"}},
            # Declared int8 but read back as fp32 (no int8 kernels ran): not an int8 row, however fast.
            "onnxruntime_int8": {**tflite_row(400.0, "int8", None), "runtime": {
                "name": "onnxruntime", "precision_declared": "int8", "precision_effective": "fp32"}}}
    best = section.summarize_tflite(rows, 224)["fastest_int8_at_batch_8"]
    assert best["variant"] == "openvino_int8" and best["over_tensorflow_fp32"] == 4.0
    asked = []
    monkeypatch.setattr(section, "stale_because", lambda model, target, image: "no conversion yet")
    monkeypatch.setattr(section, "convert", lambda engine, project, model, targets, image, **kwargs: asked.append(targets))
    section.converted(None, None, tmp_path, None, section.TfliteBenchOptions(run=tmp_path / "run", out=tmp_path))
    assert asked == [("tflite-fp32", "tflite-int8", "openvino-int8", "onnxruntime-int8")]
    section.converted(None, None, tmp_path, None, section.TfliteBenchOptions(run=tmp_path / "run", out=tmp_path,
                                                                              quick=True))
    assert asked[-1] == ("tflite-fp32", "tflite-int8")  # CI's quick bench keeps its rows
