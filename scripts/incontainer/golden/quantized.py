"""The golden check for a quantized model (TFLite fp16, dynamic-range, full int8). Bit-exactness and
fp32 tolerances do not apply: the check is top-1 agreement with the golden on the golden images plus
a bound on the probability error. The bound belongs to the model: measured when it is converted
(bound_from_measurement, recorded as golden_bound in conversion.json) or declared by the user."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from ..common import GoldenMismatch, InsideError
from ..contract import (FLAG_GOLDEN_BOUND, INT8_DOT_FLAGS, QUANTIZED_BOUND_FACTOR, QUANTIZED_BOUND_FLOOR, RUNTIME_ONNXRUNTIME,
                        RUNTIME_OPENVINO, STAGE_RUN, Code)

BOUND_MEASURED = "measured"
BOUND_DECLARED = "declared"


Rows = Sequence[Sequence[float]]  # (images, classes); plain lists, so the rule needs no numpy


def as_probabilities(values, softmax_needed: bool) -> List[List[float]]:
    """(images, classes) probabilities from the predictions' output (logits: softmax here, in float64)."""
    import numpy as np

    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    if softmax_needed:
        shifted = np.exp(values - values.max(axis=1, keepdims=True))
        values = shifted / shifted.sum(axis=1, keepdims=True)
    return values.tolist()


def _top1(row: Sequence[float]) -> int:
    return max(range(len(row)), key=lambda index: row[index])


def measure(reference: Rows, actual: Rows) -> dict:
    """How far `actual` probabilities are from the golden's: the largest absolute error, and top-1
    agreement over the golden images (with which images agree)."""
    shapes = [(len(rows), len(rows[0]) if len(rows) else 0) for rows in (reference, actual)]
    if shapes[0] != shapes[1] or any(len(row) != shapes[0][1] for row in list(reference) + list(actual)):
        raise InsideError(f"quantized golden check: the model gives probabilities of shape {shapes[1]}, the golden "
                          f"{shapes[0]}; convert the model again", code=Code.GOLDEN_MISMATCH)
    agree = [_top1(want) == _top1(got) for want, got in zip(reference, actual)]
    error = max((abs(w - g) for want, got in zip(reference, actual) for w, g in zip(want, got)), default=0.0)
    return {"max_prob_error": float(error), "top1_agreement": sum(agree) / len(agree) if agree else 1.0,
            "agree": agree, "images": len(agree)}


def bound_from_measurement(measured: dict, precision: str, factor: float = QUANTIZED_BOUND_FACTOR,
                           floor: float = QUANTIZED_BOUND_FLOOR) -> dict:
    """The model's bound from the conversion's own measurement: its largest probability error times
    `factor` (at least `floor`, at most 1), and top-1 agreement on every golden image it agreed on."""
    return {"precision": precision, "source": BOUND_MEASURED, "max_prob_error": min(1.0, max(
        measured["max_prob_error"] * factor, floor)), "min_top1_agreement": measured["top1_agreement"],
            "measured": {key: measured[key] for key in ("max_prob_error", "top1_agreement", "images")},
            "factor": factor, "floor": floor}


def resolve_bound(recorded: Optional[dict], declared: Optional[float], precision: str, where: str) -> dict:
    """The bound a run is judged by: the declared one where the user gave it (keeping the measured top-1
    agreement, else requiring it on every image), else the one measured at conversion."""
    if declared is not None:
        if not 0 < declared <= 1:
            raise InsideError(f"{FLAG_GOLDEN_BOUND} {declared}: a probability error bound lies in (0, 1]")
        agreement = (recorded or {}).get("min_top1_agreement", 1.0)
        return {"precision": precision, "source": BOUND_DECLARED, "max_prob_error": float(declared),
                "min_top1_agreement": agreement}
    if not isinstance(recorded, dict) or not isinstance(recorded.get("max_prob_error"), (int, float)):
        raise InsideError(f"{where} records no golden_bound for {precision}; convert the model again, or declare "
                          f"one with {FLAG_GOLDEN_BOUND}", code=Code.MANIFEST_INVALID)
    return recorded


def summarize(bound: dict, reference: Rows, actual: Rows, stage: str = STAGE_RUN) -> dict:
    """The quantized golden check's summary, never raising on a miss (the drift probe reports it as data)."""
    measured = measure(reference, actual)
    too_far = measured["max_prob_error"] > bound["max_prob_error"]
    disagree = measured["top1_agreement"] < bound["min_top1_agreement"]
    return {"ok": not (too_far or disagree), "kind": "quantized", "stage": stage, "bound": bound,
            "max_prob_error": measured["max_prob_error"], "top1_agreement": measured["top1_agreement"],
            "images": measured["images"], "bit_exact": False,
            "first_divergence": None if not (too_far or disagree) else "probabilities",
            "top1": {"agree": sum(measured["agree"]), "count": measured["images"], "ok": not disagree}}


def check(bound: dict, reference: Rows, actual: Rows, model_dir: str, what: str,
          stage: str = STAGE_RUN, advice: Optional[Tuple[str, str]] = None) -> dict:
    """The quantized golden check's summary; GoldenMismatch (exit 4) naming the stage and `what` (the
    runtime and precision) when top-1 agreement or the probability error is past the bound; `advice`
    (cause, fix: cpu_dependence's for int8) is added to the message."""
    summary = summarize(bound, reference, actual, stage)
    if summary["ok"]:
        return summary
    measured = {"max_prob_error": summary["max_prob_error"], "top1_agreement": summary["top1_agreement"]}
    too_far = measured["max_prob_error"] > bound["max_prob_error"]
    disagree = not summary["top1"]["ok"]
    reasons = []
    if too_far:
        reasons.append(f"probability error {measured['max_prob_error']:.3g} exceeds the {bound['source']} bound "
                       f"{bound['max_prob_error']:.3g}")
    if disagree:
        reasons.append(f"top-1 agrees on {measured['top1_agreement']:.3f} of the golden images, the bound asks "
                       f"{bound['min_top1_agreement']:.3f}")
    if advice:
        reasons.append(f"{advice[0]}; fix: {advice[1]}")
    raise GoldenMismatch(f"{model_dir}: golden check failed at stage {stage} ({what}): {'; '.join(reasons)}; this "
                         f"CPU's kernels compute the quantized model differently from where it was converted: convert "
                         f"it again here, run it at fp32, or declare a looser bound with {FLAG_GOLDEN_BOUND}",
                         code=Code.GOLDEN_MISMATCH)


def cpu_dependence(runtime: str, record: dict, isa: Sequence[str]) -> Tuple[str, str]:
    """(cause, fix) for an int8 artefact past its bound: which int8 dot-product instructions this CPU
    has (without VNNI/AMX, x86 sums u8 x s8 pairs in int16, which 8-bit weights can saturate), how the
    artefact was quantized, and the setting that keeps every CPU's integers the same."""
    have = [flag for flag in INT8_DOT_FLAGS if flag in isa]
    cpu = f"this CPU has {', '.join(have)}" if have else f"this CPU has none of {', '.join(INT8_DOT_FLAGS)} (int16 " \
        "intermediate sums: u8 x s8 products saturate with 8-bit weights)"
    settings = record.get("quantization") or {}
    cause = f"{runtime} int8 misses the bound its conversion measured; {cpu}; quantized with " + \
        (", ".join(f"{key}={value}" for key, value in sorted(settings.items())) or "unrecorded settings")
    if runtime == RUNTIME_ONNXRUNTIME:
        fix = ("quantize with reduce_range=True and per_channel=True (7-bit weights cannot saturate; coldchain "
               "convert --target onnxruntime-int8 does), or convert again on this CPU")
    elif runtime == RUNTIME_OPENVINO:
        fix = ("quantize with NNCF's overflow_fix=ENABLE (7-bit weights on every layer; coldchain convert --target "
               "openvino-int8 does), or convert again on this CPU")
    else:
        fix = "convert again on this CPU, or declare a looser bound with " + FLAG_GOLDEN_BOUND
    return cause, fix
