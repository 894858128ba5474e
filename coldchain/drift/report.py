"""Drift-test reports: JSON (for tools), Markdown (for people), JUnit XML (so CI shows every case
as a test). Each file is written to a temporary name and renamed, so a report is whole or absent.
The heatmap PNG is drawn in the inference image (see runner.render_heatmap)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from ..contract import OUTCOME_NOT_APPLICABLE, SEVERITY_ERROR
from ..fsutil import atomic_write_text, writing

REPORT_JSON = "drift-report.json"
REPORT_MARKDOWN = "drift-report.md"
REPORT_JUNIT = "drift-junit.xml"
REPORT_HEATMAP = "drift-heatmap.png"


def fmt(value, digits: int = 3) -> str:
    """A number for a table: `digits` significant digits, whole numbers from 10**digits up."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0.0:
            return "0"
        return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:.0f}"
    return str(value)


def _tensor(case: dict, key: str) -> dict:
    golden = case.get("golden") or {}
    return next((tensor for tensor in golden.get("tensors", []) if tensor["key"] == key), {})


def _first_finding(case: dict) -> str:
    if case.get("outcome") == OUTCOME_NOT_APPLICABLE:
        return "; ".join(case.get("reasons") or [])
    findings = (case.get("diagnosis") or {}).get("findings") or []
    blocking = [finding for finding in findings if finding.get("severity") == SEVERITY_ERROR]
    if blocking:
        first = blocking[0]
        nodes = f" (x{first['count']})" if first.get("count", 1) > 1 else ""
        return f"{first['code']}{nodes}: {first['cause']} -- fix: {first['fix']}"
    if case.get("lock_drift"):
        drift = case["lock_drift"]
        return f"{len(drift)} shared pins differ from requirements.lock: " + "; ".join(drift[:6]) + \
            (f"; ... ({len(drift) - 6} more)" if len(drift) > 6 else "")
    pre = case.get("preprocessing")
    if pre and not pre.get("ok"):
        fields = ", ".join(f"{k}={v['here']} (training {v['training']})" for k, v in (pre.get("differing_fields") or {}).items())
        stage, (worst, mean) = _stage_levels(pre)
        if stage:
            return (f"preprocessing mismatch at the {stage} stage: {fields or 'same spec, different pixels'} "
                    f"(up to {worst:.3g} uint8 levels, {mean:.3g} on average, on the encoded goldens)")
        return (f"preprocessing mismatch: {fields or 'same spec, different pixels'} "
                f"(max abs {fmt(pre.get('max_abs_diff'))})")
    if case.get("error"):
        return case["error"].splitlines()[0]
    # A bf16 case says what it was judged by: the model's measured budget, or the fraction alone.
    return ((case.get("golden") or {}).get("precision_rule") or {}).get("text") or ""


def _levels(preprocessing: dict | None) -> str:
    """Input differences in uint8 levels: at the first stage where the encoded goldens differ (the
    stage named beside them), else the raw-array probe's (the probe records one level's size)."""
    stage, worst = _stage_levels(preprocessing)
    if stage:
        return f"{worst[0]:.2g} / {worst[1]:.2g} ({stage})"
    if not preprocessing or "max_abs_diff" not in preprocessing:
        return "-"
    level = preprocessing.get("level") or 1 / 127.5
    return f"{preprocessing['max_abs_diff'] / level:.2g} / {preprocessing['mean_abs_diff'] / level:.2g}"


def _stage_levels(preprocessing: dict | None) -> tuple[str | None, tuple[float, float]]:
    """(the failing stage, or else the first that differs; its worst max and mean levels over the files)."""
    encoded = (preprocessing or {}).get("encoded") or {}
    stage = encoded.get("stage") or encoded.get("differs_at")
    if not stage:
        return None, (0.0, 0.0)
    results = [item["stages"].get(stage) or {} for item in encoded.get("files", [])]
    if any("shape" in result or "error" in result for result in results):
        return stage, (float("inf"), float("inf"))
    return stage, (max((r.get("max_levels", 0.0) for r in results), default=0.0),
                   max((r.get("mean_levels", 0.0) for r in results), default=0.0))


def _expected(case: dict) -> str:
    resolved = case.get("resolved_expectation") or case["expected"]
    text = case["expected"] if resolved == case["expected"] else f"{case['expected']} -> {resolved}"
    findings = case.get("expected_findings") or []
    return text + (f" + {', '.join(findings)}" if findings else "")


def _verdict(case: dict) -> str:
    if case.get("outcome") == OUTCOME_NOT_APPLICABLE:
        return "n/a"
    return "ok" if case["ok"] else "**UNEXPECTED**"


def markdown(report: dict) -> str:
    counts = report["counts"]
    lines = [
        "# coldchain drift test",
        "",
        f"Matrix `{report['matrix']}`, model sha256 `{(report.get('model_sha256') or '')[:16]}...`, "
        f"{report['generated']}, {report['host_cpu']}.",
        "",
        f"**{counts['as_expected']} of {counts['cases'] - counts.get('not_applicable', 0)} applicable cases as "
        "expected**" + ("" if report["ok"] else f", **{counts['unexpected']} unexpected**")
        + (f"; {counts['not_applicable']} not applicable to this model" if counts.get("not_applicable") else "") + ".",
        "",
        f"Host CPU flags that decide the numerics: {', '.join(report.get('host_cpu_flags') or []) or '-'} "
        f"(class {report.get('host_cpu_class', '-')}). The golden was computed with "
        f"{report.get('reference_numerics_summary', '-')}.",
        "",
        "| case | env (TF / Python) | variant | expected | outcome | numerics | loaded | preprocessing max / mean "
        "(levels) | logits max abs | logits max rel | top-1 | first divergence | latency ms (batch) | |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    shard = report.get("shard")
    if shard:
        lines[2:2] = [f"Shard {shard['index']} of {shard['total']}: {len(shard['cases'])} of "
                      f"{len(report.get('matrix_cases') or [])} cases (merge the shards with `coldchain drift-merge`).", ""]
    for case in report["cases"]:
        logits = _tensor(case, "logits")
        golden = case.get("golden") or {}
        top1 = golden.get("top1") or {}
        latency = case.get("latency") or {}
        lines.append(
            f"| {case['name']} | {case['env']} ({case.get('tensorflow')} / {case.get('python')}) | {case['variant']} | "
            f"{_expected(case)} | {case['outcome']} | {_numerics(case)} | "
            f"{'yes' if case.get('loaded') else 'no'} | "
            f"{_levels(case.get('preprocessing'))} | "
            f"{fmt(logits.get('max_abs_diff'))} | {fmt(logits.get('max_rel_diff'))} | "
            f"{top1.get('agree', '-')}/{top1.get('count', '-')} | {golden.get('first_divergence') or '-'} | "
            f"{fmt(latency.get('median_ms'), 4)} ({latency.get('batch', '-')}) | {_verdict(case)} |")
    lines += ["", "## Diagnoses", ""]
    for case in report["cases"]:
        detail = _first_finding(case)
        if detail or not case["ok"]:
            lines.append(f"- **{case['name']}** ({case['scenario'] or case['variant']}): {detail or '-'}"
                         + ("" if case["ok"] else f" -- UNEXPECTED: {'; '.join(case['reasons'])}"))
    lines += ["", "## Which TensorFlow versions load the frozen graph", "",
              "| TensorFlow | Python | env | loads | outcome | logits max abs diff | bit-exact |", "|---|---|---|---|---|---|---|"]
    for row in report.get("tensorflow_versions", []):
        lines.append(f"| {row['tensorflow']} | {row['python']} | {row['env']} | {'yes' if row['loads'] else 'no'} | "
                     f"{row['outcome']} | {fmt(row['logits_max_abs_diff'])} | {row['bit_exact']} |")
    lines += ["", "## Environments", "", "| env | image | TF | Python | device | lock | size GB |", "|---|---|---|---|---|---|---|"]
    for name, env in report["environments"].items():
        lines.append(f"| {name} | `{env['image']}` | {env['tensorflow']} | {env['python']} | {env['device']} | "
                     f"`{env['lock']}` | {env['size_bytes'] / 1e9:.2f} |")
    lines += breakdown(report["cases"])
    timing = report["timing"]
    lines += ["", f"Timing: environments {timing['environments_s']} s, variants {timing['variants_s']} s, "
                  f"cases {timing['cases_s']} s ({timing['jobs']} at a time), total {timing['total_s']} s.", ""]
    return "\n".join(lines)


# Where a case's time goes, in the order it is spent (drift-test's per-case breakdown).
PHASES = (("container_overhead_s", "container start/stop, interpreter"),
          ("process_start_to_main_s", "to the probe's main"), ("import_tensorflow_s", "TensorFlow import"),
          ("diagnosis_s", "static checks and graph import"), ("preprocessing_s", "preprocessing check"),
          ("golden_s", "golden probe"), ("latency_s", "latency"))


def describe_runtime(runtime: dict | None) -> str:
    """'openvino 2025.1 (converted by ...): bf16, declared runtime-default' for runtimes besides TensorFlow."""
    if not runtime or runtime.get("name") in (None, "tensorflow"):
        return ""
    versions = ", ".join(f"{name} {version}" for name, version in sorted((runtime.get("versions") or {}).items()))
    effective = runtime.get("precision_effective") or "not reached"
    xnnpack = runtime.get("xnnpack")
    delegate = f", XNNPACK {'on' if xnnpack.get('enabled') else 'off'}" if isinstance(xnnpack, dict) else ""
    return (f"{runtime['name']} ({versions or 'versions unknown'}): {effective}, declared "
            f"{runtime.get('precision_declared')}{delegate}")


def describe_quantized(golden: dict | None) -> str:
    """A quantized case's check against the model's own bound: 'probability error 0.012 (bound 0.036, measured)'."""
    if not golden or golden.get("kind") != "quantized":
        return ""
    bound = golden.get("bound") or {}
    return (f"probability error {fmt(golden.get('max_prob_error'), 3)} (bound {fmt(bound.get('max_prob_error'), 3)}, "
            f"{bound.get('source', '?')}), top-1 {fmt(golden.get('top1_agreement'), 3)} "
            f"(bound {fmt(bound.get('min_top1_agreement'), 3)})")


def _numerics(case: dict) -> str:
    runtime = ", ".join(part for part in (describe_runtime(case.get("runtime")), describe_quantized(case.get("golden")))
                        if part)
    return f"{runtime}; {case.get('numerics_summary') or '-'}" if runtime else (case.get("numerics_summary") or "-")


def breakdown(cases: list[dict]) -> list[str]:
    timed = [case for case in cases if (case.get("timing") or {}).get("case_s") is not None]
    if not timed:
        return []
    lines = ["", "## Where the time went (seconds per case)", "",
             "| case | container shared by | " + " | ".join(label for _, label in PHASES) + " | total |",
             "|---|---|" + "---|" * (len(PHASES) + 1)]
    totals = [0.0] * len(PHASES)
    for case in timed:
        timing = case["timing"]
        values = [float(timing.get(key) or 0.0) for key, _ in PHASES]
        totals = [a + b for a, b in zip(totals, values)]
        lines.append(f"| {case['name']} | {timing.get('cases_in_container', 1)} | "
                     + " | ".join(f"{value:.2f}" for value in values) + f" | {sum(values):.2f} |")
    lines.append(f"| **mean of {len(timed)}** | | " + " | ".join(f"{value / len(timed):.2f}" for value in totals)
                 + f" | {sum(totals) / len(timed):.2f} |")
    return lines


def junit(report: dict) -> str:
    cases = report["cases"]
    suite = ElementTree.Element("testsuite", {
        "name": "coldchain.drift", "tests": str(len(cases)),
        "failures": str(sum(not case["ok"] for case in cases)), "errors": "0",
        "skipped": str(sum(case.get("outcome") == OUTCOME_NOT_APPLICABLE for case in cases)),
        "time": f"{report['timing']['total_s']:.1f}", "timestamp": report["generated"]})
    for case in cases:
        element = ElementTree.SubElement(suite, "testcase", {
            "classname": f"drift.{case['env']}", "name": case["name"], "time": f"{case['seconds']:.2f}"})
        summary = f"expected {_expected(case)}, got {case['outcome']}"
        if case.get("outcome") == OUTCOME_NOT_APPLICABLE:
            ElementTree.SubElement(element, "skipped", {"message": _first_finding(case)})
        elif not case["ok"]:
            failure = ElementTree.SubElement(element, "failure", {"message": summary, "type": "UnexpectedOutcome"})
            failure.text = "\n".join(case["reasons"]) + "\n" + _first_finding(case)
        output = ElementTree.SubElement(element, "system-out")
        output.text = f"{summary}\n{_first_finding(case)}\n"
    root = ElementTree.Element("testsuites")
    root.append(suite)
    ElementTree.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(root, encoding="unicode") + "\n"


def report_names(suffix: str = "") -> dict[str, str]:
    """File names of a report; a shard's carry its index (drift-report.shard-2-of-3.json)."""
    if not suffix:
        return {"json": REPORT_JSON, "markdown": REPORT_MARKDOWN, "junit": REPORT_JUNIT}
    return {kind: name.replace(".", f".{suffix}.", 1) for kind, name in report_names().items()}


def write_reports(report: dict, out: Path, suffix: str = "") -> dict[str, Path]:
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    paths = {kind: out / name for kind, name in report_names(suffix).items()}
    atomic_write_text(paths["json"], json.dumps(report, indent=2, sort_keys=True) + "\n")
    atomic_write_text(paths["markdown"], markdown(report))
    atomic_write_text(paths["junit"], junit(report))
    return paths
