"""The golden check a model passes before any prediction: this runtime's preprocessing must
reproduce the golden input, the graph must reproduce the golden tensors within their tolerances,
and a prediction must not depend on the other images of its batch.

Runtime-agnostic: a runtime is a function from an input batch to the tensors the golden records.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, Optional, Sequence

import numpy as np

from ..common import GoldenMismatch, PreprocessingMismatch
from ..contract import GOLDEN_LOGITS_KEY, GOLDEN_PROBABILITIES_KEY, MANIFEST_FILE, Code
from ..data.preprocess import PreprocessSpec, check_preprocessing
from . import encoded
from .budget import bf16_deviations, bf16_tolerance, precision_rule
from .compare import compare, top1_agreement

# inputs [N, H, W, C] -> {golden tensor key: array}
Runner = Callable[[np.ndarray], Dict[str, np.ndarray]]
BLOCK_PREFIX = "block"


def batch_limit(manifest: dict) -> Optional[int]:
    """A graph exported with a fixed batch (older export_inference_graph.py wrote 1) takes only that."""
    shape = manifest["inputs"][0].get("shape") or []
    return shape[0] if shape and isinstance(shape[0], int) else None


def in_batches(run: Runner, inputs: np.ndarray, limit: Optional[int]) -> Dict[str, np.ndarray]:
    if not limit or len(inputs) <= limit:
        if limit and len(inputs) < limit:
            padded = np.concatenate([inputs, np.repeat(inputs[-1:], limit - len(inputs), axis=0)])
            return {key: value[:len(inputs)] for key, value in run(padded).items()}
        return run(inputs)
    parts = [in_batches(run, inputs[start:start + limit], limit) for start in range(0, len(inputs), limit)]
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def preprocessing_result(manifest: dict, arrays: dict, spec: PreprocessSpec) -> Optional[dict]:
    """This runtime's preprocessing on the golden raw images, then on the encoded golden files stage by
    stage (encoded.py); None for models frozen before either existed."""
    reference = PreprocessSpec.from_json(manifest["preprocessing"], MANIFEST_FILE)
    probe = manifest["golden"].get("preprocessing_probe")
    result = None
    if probe and probe["raw_key"] in arrays and probe["expected_key"] in arrays:
        result = check_preprocessing(spec, arrays[probe["raw_key"]], arrays[probe["expected_key"]], probe["abs_tol"],
                                     probe["mean_abs_tol"], reference)
    files = encoded.check(spec, manifest, arrays, reference)
    if files is None:
        return result
    result = dict(result or {"ok": True, "level": spec.level, "differing_fields": files["differing_fields"]})
    result.update(encoded=files, stage=files["stage"], ok=result["ok"] and files["ok"])
    return result


def input_path_findings(preprocessing: Optional[dict]) -> list:
    """(code, cause, fix) warnings for an input path that is not the golden's but within tolerance:
    another decoder release, or pixels that moved by resampling round-off. Never silent."""
    files = (preprocessing or {}).get("encoded")
    if not files or not files["ok"]:
        return []
    found = []
    if files["decoder_differs"]:
        found.append((Code.DECODER_DIFFERS, "the image decoder here is not the golden's: "
                      + "; ".join(files["decoder_differs"]), "install the decoder version the manifest's "
                      "golden.encoded.decoder names, to decode as the reference did"))
    warning = encoded.warning(files)
    if warning:
        found.append((Code.INPUT_PATH_DIFFERS, warning, f"use the {files['differs_at']} library at the version the "
                      "golden was made with (the manifest's environment) for predictions identical to the reference's"))
    return found


def evaluate(run: Runner, manifest: dict, arrays: dict) -> dict:
    """Run the golden inputs and compare every recorded tensor; never raises on a mismatch."""
    golden = manifest["golden"]
    entries = golden["tensors"]
    start = time.perf_counter()
    values = in_batches(run, arrays[golden["input_key"]], batch_limit(manifest))
    seconds = time.perf_counter() - start
    results = [compare(entry["key"], arrays[entry["key"]], values[entry["key"]], entry["abs_tol"], entry["rel_tol"])
               for entry in entries]
    decisive = next((entry for entry in entries if entry["key"] == GOLDEN_LOGITS_KEY), None) or \
        next(entry for entry in entries if entry["key"] == GOLDEN_PROBABILITIES_KEY)
    reference, actual = arrays[decisive["key"]], values[decisive["key"]]
    # slim's outputs are [N, 1, 1, K]; the ranking is over the K classes of each image.
    agreement = top1_agreement(reference.reshape(len(reference), -1), actual.reshape(len(actual), -1),
                               decisive["abs_tol"])
    ok = all(result["ok"] for result in results) and agreement["ok"]
    # Blocks are listed in network order, so the first failing one localises the divergence.
    ordered = sorted(results, key=lambda r: (not r["key"].startswith(BLOCK_PREFIX), r["key"]))
    first = next((result["key"] for result in ordered if not result["ok"]), None)
    bit_exact = all(result.get("max_abs_diff") == 0.0 for result in results)
    return {"ok": ok, "bit_exact": bit_exact, "tensors": results, "top1": agreement, "first_divergence": first,
            "seconds": round(seconds, 4), **({"precision_rule": golden["precision_rule"]}
                                             if "precision_rule" in golden else {})}


def batch_invariance(run: Runner, manifest: dict, arrays: dict) -> Optional[dict]:
    """Whether the first probe image alone gives what it gives inside the probe batch. A graph whose
    batch norm runs in training mode normalises with the batch's own statistics and fails this.
    None where the batch is fixed (nothing to compare)."""
    inputs = arrays[manifest["golden"]["input_key"]]
    if batch_limit(manifest) is not None or len(inputs) < 2:
        return None
    entry = next((e for e in manifest["golden"]["tensors"] if e["key"] == GOLDEN_LOGITS_KEY), None) or \
        next(e for e in manifest["golden"]["tensors"] if e["key"] == GOLDEN_PROBABILITIES_KEY)
    together = run(inputs)[entry["key"]][:1]
    alone = run(inputs[:1])[entry["key"]]
    result = compare(entry["key"], together, alone, entry["abs_tol"], entry["rel_tol"])
    return {"ok": result["ok"], "key": entry["key"], "max_abs_diff": result.get("max_abs_diff"),
            "worst_fraction_of_tolerance": result.get("worst_fraction_of_tolerance")}


BATCH_DEPENDENT_CAUSE = ("the first probe image alone gives other {key} than inside its batch ({diff:.3g} apart, "
                         "{ratio:.3g}x tolerance): the outputs depend on the batch, as batch norm in training mode does")


def run_golden(run: Runner, model_dir: str, manifest: dict, arrays: dict, spec: PreprocessSpec) -> dict:
    """The whole check, raising the kit's errors: preprocessing first (so the model is not blamed for
    pixels), then the golden tensors, then batch invariance."""
    preprocessing = preprocessing_result(manifest, arrays, spec)
    if preprocessing is not None and not preprocessing["ok"]:
        raise PreprocessingMismatch(preprocessing_message(model_dir, preprocessing), code=Code.PREPROCESSING_MISMATCH)
    summary = evaluate(run, manifest, arrays)
    summary["preprocessing"] = preprocessing
    if not summary["ok"]:
        raise GoldenMismatch(golden_message(model_dir, summary), code=Code.GOLDEN_MISMATCH)
    invariance = batch_invariance(run, manifest, arrays)
    summary["batch_invariance"] = invariance
    if invariance is not None and not invariance["ok"]:
        from ..common import PreflightFailed

        raise PreflightFailed(f"{model_dir}: " + BATCH_DEPENDENT_CAUSE.format(
            key=invariance["key"], diff=invariance["max_abs_diff"], ratio=invariance["worst_fraction_of_tolerance"])
            + "; rebuild the network with is_training=False and freeze again", code=Code.BATCH_NORM_TRAINING)
    return summary


def only(manifest: dict, keys: Sequence[str]) -> dict:
    """The manifest judging only these golden tensors."""
    return {**manifest, "golden": {**manifest["golden"],
                                   "tensors": [entry for entry in manifest["golden"]["tensors"] if entry["key"] in keys]}}


def check_outputs_only(run: Runner, keys: Sequence[str], model_dir: str, manifest: dict, arrays: dict) -> dict:
    """The model as compiled for predictions alone (without the block outputs) is a second compilation:
    what writes the predictions passes the golden check on its outputs too."""
    result = evaluate(run, only(manifest, keys), arrays)
    if not result["ok"]:
        raise GoldenMismatch(golden_message(f"{model_dir} (compiled for its predictions alone)", result),
                             code=Code.GOLDEN_MISMATCH)
    return {"ok": True, "keys": list(keys), "bit_exact": result["bit_exact"],
            "max_abs_diff": max(tensor.get("max_abs_diff", 0.0) for tensor in result["tensors"])}


def golden_message(model_dir: str, summary: dict) -> str:
    first = next((r for r in summary["tensors"] if r["key"] == summary["first_divergence"]), None)
    agreement = summary["top1"]
    where = (f"first divergence at {first['key']} (max abs diff {first.get('max_abs_diff', float('nan')):.3g}, "
             f"{first.get('worst_fraction_of_tolerance', float('nan')):.3g}x tolerance)") if first else \
        f"top-1 disagrees on {agreement['decisive_disagreements']} of {agreement['count']} probes"
    if summary.get("precision_rule"):
        where += f" ({summary['precision_rule']['text']})"
    return (f"golden probe of {model_dir} failed on this runtime: {where}; this TensorFlow/CPU computes other numbers "
            "than the environment the golden was made in (compare the manifest's environment and numerics with "
            "this runtime's: coldchain doctor, coldchain drift-test)")


def preprocessing_message(model_dir: str, result: dict) -> str:
    if result.get("encoded") and not result["encoded"]["ok"]:
        return encoded.message(model_dir, result["encoded"])
    fields = result.get("differing_fields") or {}
    named = ", ".join(f"{key} {value['here']} (manifest: {value['training']})" for key, value in fields.items())
    detail = result.get("reason") or (f"max abs diff {result['max_abs_diff']:.3g} "
                                      f"({result['max_abs_diff'] / result['level']:.3g} uint8 levels), "
                                      f"tolerance {result['abs_tol']:.3g}")
    cause = f"this runtime preprocesses differently from the manifest: {named}" if named else \
        "the manifest's preprocessing spec gives other pixels here than where the golden was made (a different " \
        "image library version?)"
    return (f"preprocessing mismatch for {model_dir}: {cause}; {detail}; use the manifest's preprocessing spec "
            "unchanged - the model itself was not run")


def session_runner(session, tensors: Dict[str, str], input_tensor: str) -> Runner:
    """A TensorFlow session as a Runner over the golden's tensor keys."""
    keys = list(tensors)
    names = [tensors[key] for key in keys]

    def run(batch: np.ndarray) -> Dict[str, np.ndarray]:
        return dict(zip(keys, session.run(names, {input_tensor: batch})))
    return run


def with_precision_tolerance(manifest: dict, arrays: dict, fraction: float) -> dict:
    """The manifest as a run declared at reduced precision (bf16) is judged: each golden tensor's
    abs_tol widened to `fraction` of its largest magnitude, or to the model's measured bf16 budget
    (golden.precision_budget, budget.py) where that is wider; the fp32 tolerances stay where wider.
    A manifest from before the budget gets the fraction alone, and the rule says so."""
    import copy

    widened = copy.deepcopy(manifest)
    deviations = bf16_deviations(manifest)
    for entry in widened["golden"]["tensors"]:
        scale = float(np.max(np.abs(arrays[entry["key"]]))) if arrays[entry["key"]].size else 0.0
        entry["abs_tol"] = bf16_tolerance(float(entry["abs_tol"]), fraction * scale,
                                          (deviations or {}).get(entry["key"]))
        entry["declared_fraction"] = fraction
    widened["golden"]["precision_rule"] = precision_rule(deviations, fraction)
    return widened


def golden_tensors(manifest: dict) -> Dict[str, str]:
    return {entry["key"]: entry["name"] for entry in manifest["golden"]["tensors"]}


def missing_tensors(graph, names: Sequence[str]) -> list:
    missing = []
    for name in names:
        try:
            graph.get_tensor_by_name(name)
        except (KeyError, ValueError):
            missing.append(name)
    return missing
