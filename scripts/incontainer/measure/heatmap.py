"""The drift heatmap: per-layer divergence from the golden probe, one row per drift-test case.

Runs in the inference image (Pillow is in its lock) so the host needs no imaging library. Each
cell is the worst |actual - golden| as a fraction of that tensor's tolerance, on a log scale:
grey = bit-exact, green = within tolerance (darker = closer to the limit), red = beyond it.
"""
from __future__ import annotations

import argparse
import math
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from ..common import InsideError, atomic_write_bytes, read_json_file, run_main
from ..contract import FLAG_OUTPUT, FLAG_REPORT, MODULES, OUTCOME_BIT_EXACT

# The input path stage by stage (the encoded goldens), then the graph layer by layer.
STAGE_COLUMNS = ("decode", "resize/crop", "normalise")
COLUMNS = STAGE_COLUMNS + ("block1", "block2", "block3", "block4", "logits", "probabilities")
CELL_W, CELL_H, LABEL_W, HEADER_H, LEGEND_H = 92, 22, 480, 40, 46
EXACT = (225, 225, 225)
MISSING = (255, 255, 255)


def cell_value(case: dict, column: str) -> float | None:
    """Fraction of tolerance used (0 = bit-exact), or None where the case never got that far."""
    if column in STAGE_COLUMNS:
        return stage_value(case.get("preprocessing"), column)
    golden = case.get("golden") or {}
    if golden.get("kind") == "quantized" and column == "probabilities":  # the model's own bound, not a tolerance
        bound = (golden.get("bound") or {}).get("max_prob_error")
        return golden.get("max_prob_error", 0.0) / bound if bound else None
    for tensor in golden.get("tensors", []):
        if tensor["key"] == column:
            if tensor.get("max_abs_diff") == 0.0:
                return 0.0
            return tensor.get("worst_fraction_of_tolerance")
    return None


def stage_value(pre: dict | None, stage: str) -> float | None:
    """The worst encoded golden at this stage, as a fraction of the stage tolerance (max or mean);
    models made before encoded goldens show their raw-array probe under resize/crop."""
    files = (pre or {}).get("encoded")
    if not files:
        if stage != "resize/crop" or not pre or "max_abs_diff" not in pre:
            return None
        if not pre["max_abs_diff"]:
            return 0.0
        return max(pre["max_abs_diff"] / pre["abs_tol"], pre["mean_abs_diff"] / pre["mean_abs_tol"])
    worst = 0.0
    for item in files["files"]:
        result = item["stages"].get(stage) or {}
        if "error" in result or "shape" in result:
            return 1000.0
        worst = max(worst, result.get("max_levels", 0.0) / files.get("max_levels", 2.0),
                    result.get("mean_levels", 0.0) / files.get("mean_levels", 0.5))
    return worst


def colour(value: float | None) -> tuple[int, int, int]:
    if value is None:
        return MISSING
    if value == 0.0:
        return EXACT
    if value > 1.0:
        strength = min(1.0, math.log10(value) / 3 + 0.35)
        return (int(200 + 55 * strength), int(120 * (1 - strength)), int(110 * (1 - strength)))
    # 1e-6 .. 1 of tolerance -> light to dark green
    position = min(1.0, max(0.0, (math.log10(max(value, 1e-6)) + 6) / 6))
    return (int(200 - 170 * position), int(235 - 95 * position), int(200 - 150 * position))


def render(report: dict) -> bytes:
    cases = report.get("cases", [])
    if not cases:
        raise InsideError("the drift report has no cases to draw")
    font = ImageFont.load_default()
    width = LABEL_W + CELL_W * len(COLUMNS) + 10
    height = HEADER_H + CELL_H * len(cases) + LEGEND_H
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.text((8, 6), "coldchain drift: worst |output - golden| / tolerance, per layer (log scale)", fill=(0, 0, 0), font=font)
    for index, column in enumerate(COLUMNS):
        draw.text((LABEL_W + index * CELL_W + 4, HEADER_H - 16), column, fill=(0, 0, 0), font=font)
    for row, case in enumerate(cases):
        top = HEADER_H + row * CELL_H
        mark = "ok " if case.get("ok") else "XX "
        label = f"{mark}{case['name']} [{case.get('env')}, TF {case.get('tensorflow')}] -> {case.get('outcome')}"
        draw.text((6, top + 5), label[:78], fill=(0, 0, 0) if case.get("ok") else (180, 0, 0), font=font)
        for index, column in enumerate(COLUMNS):
            value = cell_value(case, column)
            left = LABEL_W + index * CELL_W
            draw.rectangle([left, top, left + CELL_W - 2, top + CELL_H - 2], fill=colour(value), outline=(190, 190, 190))
            text = "-" if value is None else ("exact" if value == 0.0 else f"{value:.1e}")
            draw.text((left + 6, top + 5), text, fill=(0, 0, 0), font=font)
    legend_top = HEADER_H + CELL_H * len(cases) + 10
    swatches = [(EXACT, OUTCOME_BIT_EXACT), (colour(1e-4), "1e-4 of tolerance"), (colour(0.9), "near tolerance"),
                (colour(50.0), "beyond tolerance"), (MISSING, "- not run (failed earlier)")]
    left = 8
    for fill, text in swatches:
        draw.rectangle([left, legend_top, left + 16, legend_top + 14], fill=fill, outline=(120, 120, 120))
        draw.text((left + 22, legend_top + 2), text, fill=(0, 0, 0), font=font)
        left += 40 + 7 * len(text)
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def main(argv: Sequence[str] | None = None) -> int | None:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULES['heatmap']}", description=__doc__)
    parser.add_argument(FLAG_REPORT, required=True, help="drift report JSON")
    parser.add_argument(FLAG_OUTPUT, required=True, help="PNG to write")
    args = parser.parse_args(argv)
    report = read_json_file(args.report, "drift report", "run the drift test to produce it")
    atomic_write_bytes(args.output, render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
