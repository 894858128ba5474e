"""Golden probe arithmetic in numpy only (so any runtime can be judged): the probe's inputs, the
per-tensor tolerances, the differences and the top-1 agreement."""
from __future__ import annotations

import numpy as np

BLOCK_ROLE = "block"
OUTPUT_ROLE = "output"
# Tolerances are relative to each tensor's own scale: kernels differ (oneDNN vs Eigen, AVX2 vs
# AVX-512, TF versions) by ~1e-6 per op, which after 50 layers stays well below 1e-3 of the scale.
RELATIVE_TOLERANCE = 1e-3
SCALE_FRACTION_TOLERANCE = 2e-3
PROBABILITY_ABS_TOLERANCE = 1e-3


def golden_inputs(seed: int, count: int, height: int, width: int) -> np.ndarray:
    """Already-preprocessed inputs in [-1, 1]: coarse blobs plus fine noise, so the probe exercises
    both smooth regions and edges like real images, while being derivable from the seed alone."""
    rng = np.random.default_rng([seed, 0x601DE7])
    coarse = rng.uniform(-1.0, 1.0, size=(count, max(1, height // 8), max(1, width // 8), 3))
    upsampled = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)[:, :height, :width, :]
    if upsampled.shape[1] < height or upsampled.shape[2] < width:
        pad = ((0, 0), (0, height - upsampled.shape[1]), (0, width - upsampled.shape[2]), (0, 0))
        upsampled = np.pad(upsampled, pad, mode="edge")
    fine = rng.normal(0.0, 0.25, size=(count, height, width, 3))
    return np.clip(upsampled * 0.75 + fine, -1.0, 1.0).astype(np.float32)


def golden_inputs_for(spec, seed: int, count: int) -> np.ndarray:
    """The probe's inputs in the units the model's preprocessing produces: the [-1, 1] pattern read
    as uint8 levels, then normalised as `spec` does (the kit's own preset gets the pattern itself)."""
    pattern = golden_inputs(seed, count, int(spec.height), int(spec.width))
    if spec.preset == "coldchain":
        return pattern
    levels = (pattern.astype(np.float64) + 1.0) * 127.5
    if spec.value_range == "0-1":
        levels = levels / 255.0
    normalised = (levels - np.asarray(spec.mean, dtype=np.float64)) / np.asarray(spec.std, dtype=np.float64)
    if spec.channel_order == "BGR":
        normalised = normalised[..., ::-1]
    return normalised.astype(np.float32)


def tolerance_for(key: str, reference: np.ndarray) -> tuple[float, float]:
    if key == "probabilities":
        return PROBABILITY_ABS_TOLERANCE, RELATIVE_TOLERANCE
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    return max(SCALE_FRACTION_TOLERANCE * max(scale, 1.0 if key == "logits" else scale), 1e-6), RELATIVE_TOLERANCE


def compare(key: str, reference: np.ndarray, actual: np.ndarray, abs_tol: float, rel_tol: float) -> dict:
    if reference.shape != actual.shape:
        return {"key": key, "ok": False, "reason": f"shape {list(actual.shape)} != golden {list(reference.shape)}"}
    reference = reference.astype(np.float64)
    actual = actual.astype(np.float64)
    difference = np.abs(actual - reference)
    allowed = abs_tol + rel_tol * np.abs(reference)
    finite = bool(np.all(np.isfinite(actual)))
    ratio = float(np.max(difference / allowed)) if difference.size else 0.0
    return {
        "key": key,
        "ok": finite and ratio <= 1.0,
        "max_abs_diff": float(np.max(difference)) if difference.size else 0.0,
        "max_rel_diff": float(np.max(difference / np.maximum(np.abs(reference), 1e-12))) if difference.size else 0.0,
        "worst_fraction_of_tolerance": ratio,
        "abs_tol": abs_tol,
        "rel_tol": rel_tol,
        **({} if finite else {"reason": "non-finite values"}),
    }


def top1_agreement(reference_logits: np.ndarray, actual_logits: np.ndarray, abs_tol: float) -> dict:
    """Only count disagreements where the golden top-1 beat the runner-up by more than the tolerance;
    near-ties may legitimately flip under tiny numeric drift."""
    reference_top = np.argmax(reference_logits, axis=1)
    actual_top = np.argmax(actual_logits, axis=1)
    ordered = np.sort(reference_logits, axis=1)
    margins = ordered[:, -1] - ordered[:, -2] if reference_logits.shape[1] > 1 else np.full(len(ordered), np.inf)
    decisive = margins > 2 * abs_tol
    disagreements = int(np.sum((reference_top != actual_top) & decisive))
    return {
        "agree": int(np.sum(reference_top == actual_top)),
        "count": int(len(reference_top)),
        "decisive_disagreements": disagreements,
        "ok": disagreements == 0,
    }
