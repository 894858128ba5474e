"""Goldens that start from encoded files: a few JPEG and PNG pictures travel in golden.npz with
what each stage made of them where the golden was computed (decoded pixels, the resized/cropped
array, the model's input row), and the model's outputs for those rows join the golden tensors.

Before a prediction every runtime decodes the bytes with the manifest's decoder and runs each stage
on the golden's own input to that stage, so a divergence is named by stage: decode (another
libjpeg-turbo, IDCT method, EXIF or alpha handling), resize/crop, or normalise, never as the model's.
"""
from __future__ import annotations

import io
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from ..data.decode import identity
from ..data.image_files import BadImageError, decode_image_bytes, for_spec
from ..data.preprocess import PreprocessSpec, differing_fields

BYTES, DECODED, RESIZED = "encoded_bytes/", "encoded_decoded/", "encoded_resized/"
# Each stage is judged as the raw probe is (preprocess.tolerances): beyond 2 uint8 levels anywhere or
# half a level on average the pipeline differs, and the model is not to blame. Less than that is
# resampling round-off between library releases: reported as a warning with the stage, never silent.
MAX_LEVELS, MEAN_LEVELS = 2.0, 0.5
EXIF_ORIENTATION = 0x0112


def _picture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth structure plus sensor-like noise: JPEG's IDCT rounding shows on it as on photographs."""
    rows = np.linspace(0.0, 1.0, height)[:, None, None]
    cols = np.linspace(0.0, 1.0, width)[None, :, None]
    phase = rng.uniform(0, 2 * np.pi, size=(1, 1, 3))
    smooth = 127.5 + 100 * np.sin(5 * rows + 3 * cols + phase) * np.cos(4 * cols - 6 * rows + phase[..., ::-1])
    edges = 40.0 * (((rows * 7 + cols * 3) % 1.0) > 0.5)
    pixels = np.clip(np.rint(smooth + edges + rng.normal(0, 10, size=(height, width, 3))), 0, 255)
    # A band of full-contrast stripes, as text and line art have: where resamplers and IDCTs differ most.
    band = slice(height // 3, height // 3 + max(4, height // 6))
    stripes = 255.0 * (((np.arange(width) // 3 + np.arange(height)[band, None] // 5) % 2) > 0)
    pixels[band] = stripes[..., None]
    return pixels.astype(np.uint8)


def _encode(pixels: np.ndarray, mode: str, **options) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(pixels)
    if mode == "L":
        image = image.convert("L")
    elif mode == "RGBA":
        height, width = pixels.shape[:2]
        alpha = np.clip(np.linspace(40, 255, width)[None, :] + np.zeros((height, 1)), 0, 255).astype(np.uint8)
        image = Image.fromarray(np.dstack([pixels, alpha]), "RGBA")
    image.save(buffer, **options)
    return buffer.getvalue()


def golden_pictures(spec: PreprocessSpec, seed: int) -> List[Tuple[str, bytes]]:
    """The encoded golden files: the JPEG kinds decoders disagree on (chroma subsampling,
    progressive, grayscale, an EXIF rotation) and a PNG with alpha, in odd sizes and both aspects."""
    rng = np.random.default_rng([seed, 0xE2C0DE])
    height = max(int(spec.height), int(spec.width), int(spec.resize_side or 0))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    kinds = [
        ("baseline-420.jpg", (height + 11, height * 4 // 3 + 5), "RGB", {"format": "JPEG", "quality": 90, "subsampling": 2}),
        ("progressive-444.jpg", (height * 4 // 3 + 3, height + 9), "RGB",
         {"format": "JPEG", "quality": 95, "subsampling": 0, "progressive": True}),
        ("baseline-422.jpg", (height + 21, height + 17), "RGB", {"format": "JPEG", "quality": 85, "subsampling": 1}),
        ("grayscale.jpg", (height + 7, height * 5 // 4), "L", {"format": "JPEG", "quality": 90}),
        ("exif-rotated.jpg", (height * 5 // 4 + 1, height + 3), "RGB",
         {"format": "JPEG", "quality": 90, "subsampling": 2, "exif": exif.tobytes()}),
        ("alpha.png", (height + 5, height * 4 // 3 + 1), "RGBA", {"format": "PNG"}),
    ]
    return [(name, _encode(_picture(rng, *size), mode, **options)) for name, size, mode, options in kinds]


def make(spec: PreprocessSpec, seed: int, first_row: int) -> Tuple[Dict[str, np.ndarray], np.ndarray, dict]:
    """(arrays for golden.npz, the model input rows, the manifest's golden.encoded section)."""
    arrays: Dict[str, np.ndarray] = {}
    rows, files = [], []
    for name, data in golden_pictures(spec, seed):
        image = decode_image_bytes(data, name, **for_spec(spec))
        resized = spec.resize_crop(image)
        arrays[BYTES + name] = np.frombuffer(data, np.uint8).copy()
        arrays[DECODED + name] = np.asarray(image, np.uint8)
        arrays[RESIZED + name] = np.asarray(resized, np.float32)
        rows.append(spec.normalise(resized))
        files.append({"name": name, "row": first_row + len(files), "bytes": len(data)})
    section = {"files": files, "decoder": identity(spec.decoder), "max_levels": MAX_LEVELS,
               "mean_levels": MEAN_LEVELS}
    return arrays, np.stack(rows).astype(np.float32), section


def array_keys(section: Optional[dict]) -> List[str]:
    """The golden.npz arrays an encoded section needs."""
    names = [entry["name"] for entry in (section or {}).get("files", [])]
    return [prefix + name for name in names for prefix in (BYTES, DECODED, RESIZED)]


def _raw_level(spec: PreprocessSpec) -> float:
    return 1.0 / 255.0 if spec.value_range == "0-1" else 1.0


def _compare(actual: np.ndarray, expected: np.ndarray, level: float) -> dict:
    if actual.shape != expected.shape:
        return {"shape": list(actual.shape), "golden_shape": list(expected.shape)}
    difference = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    return {"max_levels": float(difference.max()) / level if difference.size else 0.0,
            "mean_levels": float(difference.mean()) / level if difference.size else 0.0,
            "pixels_differing": int(np.count_nonzero(difference.reshape(-1, difference.shape[-1]).max(axis=1)))}


def _stage_ok(result: dict) -> bool:
    return "error" not in result and "shape" not in result and result["max_levels"] <= MAX_LEVELS \
        and result["mean_levels"] <= MEAN_LEVELS


def _identical(result: dict) -> bool:
    return "error" not in result and "shape" not in result and result["max_levels"] == 0.0


def check_file(spec: PreprocessSpec, name: str, arrays: dict, row: np.ndarray) -> dict:
    """Each stage of this environment's preprocessing, run on the golden's own input to that stage."""
    stages: Dict[str, dict] = {}
    try:
        decoded = np.asarray(decode_image_bytes(arrays[BYTES + name].tobytes(), name, **for_spec(spec)), np.uint8)
        stages["decode"] = _compare(decoded, arrays[DECODED + name], 1.0)
    except BadImageError as error:
        stages["decode"] = {"error": str(error)}
    golden_decoded = Image.fromarray(arrays[DECODED + name])
    stages["resize/crop"] = _compare(np.asarray(spec.resize_crop(golden_decoded), np.float32),
                                     arrays[RESIZED + name], _raw_level(spec))
    stages["normalise"] = _compare(spec.normalise(arrays[RESIZED + name]), row, spec.level)
    for result in stages.values():
        result.update(ok=_stage_ok(result), identical=_identical(result))
    first = next((stage for stage, result in stages.items() if not result["ok"]), None)
    differs = next((stage for stage, result in stages.items() if not result["identical"]), None)
    return {"name": name, "ok": first is None, "stage": first, "differs_at": differs, "stages": stages}


def check(spec: PreprocessSpec, manifest: dict, arrays: dict, reference: Optional[PreprocessSpec] = None) -> Optional[dict]:
    """The encoded goldens through this environment's preprocessing; None for models made before them."""
    section = manifest["golden"].get("encoded")
    if not section:
        return None
    inputs = arrays[manifest["golden"]["input_key"]]
    results = [check_file(spec, entry["name"], arrays, inputs[entry["row"]]) for entry in section["files"]]
    order = ("decode", "resize/crop", "normalise")
    stage = min((r["stage"] for r in results if r["stage"]), key=order.index, default=None)
    differs = min((r["differs_at"] for r in results if r["differs_at"]), key=order.index, default=None)
    here = identity(spec.decoder)
    return {"ok": stage is None, "stage": stage, "differs_at": differs, "files": results, "decoder_here": here,
            "decoder_golden": section.get("decoder"),
            "decoder_differs": _decoder_differs(section.get("decoder"), here),
            "differing_fields": differing_fields(spec, reference)}


def _decoder_differs(golden: Optional[dict], here: dict) -> List[str]:
    """What differs between the golden's decoder and this one (library, version, libjpeg, IDCT)."""
    if not golden:
        return []
    return [f"{key} {golden.get(key)} -> {here.get(key)}" for key in ("decoder", "library", "version", "jpeg_library",
                                                                      "jpeg_idct") if golden.get(key) != here.get(key)]


def _worst(result: dict, stage: str) -> Tuple[dict, dict]:
    candidates = [item for item in result["files"] if stage in item["stages"]]
    worst = max(candidates, key=lambda item: (not item["stages"][stage]["ok"],
                                              item["stages"][stage].get("max_levels") or 0.0))
    return worst, worst["stages"][stage]


def _amount(detail: dict) -> str:
    if "error" in detail:
        return detail["error"]
    if "shape" in detail:
        return f"{detail['shape'][:2]} here, {detail['golden_shape'][:2]} in the golden (orientation?)"
    return (f"{detail['pixels_differing']} pixels differ, by up to {detail['max_levels']:.3g} uint8 levels "
            f"(mean {detail['mean_levels']:.3g})")


def warning(result: dict) -> Optional[str]:
    """Within tolerance but not the golden's pixels: what differs, where, and by how much."""
    if not result["ok"] or result["differs_at"] is None:
        return None
    worst, detail = _worst(result, result["differs_at"])
    changed = "; ".join(result["decoder_differs"]) or "same decoder"
    return (f"the {result['differs_at']} stage gives other pixels here than where the golden was made "
            f"(encoded golden {worst['name']}: {_amount(detail)}; decoder: {changed}); within the "
            f"{MAX_LEVELS:g}-level tolerance, so predictions may differ slightly from the reference's")


def message(model_dir: str, result: dict) -> str:
    """One line: which stage, on which file, by how much, and the fix."""
    worst, detail = _worst(result, result["stage"])
    amount = _amount(detail)
    changed = "; ".join(result["decoder_differs"]) or "same decoder"
    fields = ", ".join(f"{key} {value['here']} (manifest: {value['training']})"
                       for key, value in (result.get("differing_fields") or {}).items())
    fix = {"decode": "decode with the manifest's decoder at the recorded version (preprocessing.decoder; for slim's "
                     "presets TensorFlow's decode_jpeg with its default fast IDCT)",
           "resize/crop": "resize and crop with the manifest's resize_library and sizes",
           "normalise": "apply the manifest's channel order, mean and std"}[result["stage"]]
    return (f"preprocessing mismatch for {model_dir} at the {result['stage']} stage: encoded golden {worst['name']}: "
            f"{amount}; decoder: {changed}" + (f"; fields {fields}" if fields else "") + f"; fix: {fix} - the model "
            "itself was not run")
