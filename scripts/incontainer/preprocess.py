"""The one preprocessing contract shared by training, the manifest and inference."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from PIL import Image

from .common import InsideError
from .images import resize_rgb

SUPPORTED_RESIZE = ("bilinear", "bicubic", "nearest")


@dataclass(frozen=True)
class PreprocessSpec:
    """Everything needed to turn an image file into the frozen graph's `input` tensor.

    Scaling to [-1, 1] (mean = std = 127.5) rather than ImageNet mean subtraction: it needs no
    dataset statistics and matches what slim's inception-style preprocessing feeds ResNets.
    """

    height: int
    width: int
    resize_method: str = "bilinear"
    resize_library: str = "pillow"
    channel_order: str = "RGB"
    alpha_handling: str = "composite_on_white"
    orientation: str = "exif_transpose"
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)
    dtype: str = "float32"
    layout: str = "NHWC"

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, value: Any, source: str) -> "PreprocessSpec":
        if not isinstance(value, Mapping):
            raise InsideError(f"preprocessing spec in {source} is not an object; re-run freeze to regenerate it")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise InsideError(
                f"preprocessing spec in {source} has fields {unknown} this version does not understand; "
                "use the coldchain release that produced the model"
            )
        try:
            spec = cls(**{key: tuple(item) if isinstance(item, list) else item for key, item in value.items()})
        except TypeError as error:
            raise InsideError(f"preprocessing spec in {source} is incomplete ({error}); re-run freeze") from None
        spec.validate(source)
        return spec

    def validate(self, source: str) -> None:
        problems = []
        if self.resize_method not in SUPPORTED_RESIZE:
            problems.append(f"resize_method {self.resize_method!r} (supported: {', '.join(SUPPORTED_RESIZE)})")
        if self.resize_library != "pillow":
            problems.append(f"resize_library {self.resize_library!r} (only pillow)")
        if self.channel_order not in ("RGB", "BGR"):
            problems.append(f"channel_order {self.channel_order!r}")
        if self.dtype != "float32" or self.layout != "NHWC":
            problems.append(f"dtype/layout {self.dtype}/{self.layout} (only float32/NHWC)")
        if len(self.mean) != 3 or len(self.std) != 3 or any(value == 0 for value in self.std):
            problems.append("mean/std must have 3 entries and std must be non-zero")
        if int(self.height) < 1 or int(self.width) < 1:
            problems.append(f"size {self.height}x{self.width}")
        if problems:
            raise InsideError(f"unsupported preprocessing in {source}: {'; '.join(problems)}")

    def resize(self, image: Image.Image) -> np.ndarray:
        """uint8 HxWx3 in the spec's channel order; cached by the training loader."""
        array = resize_rgb(image, self.height, self.width, self.resize_method)
        return array[..., ::-1] if self.channel_order == "BGR" else array

    def normalize(self, uint8_batch: np.ndarray) -> np.ndarray:
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return ((uint8_batch.astype(np.float32) - mean) / std).astype(np.float32)


def preprocessing_probe(spec: PreprocessSpec, seed: int, count: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Raw RGB images (larger than the model input, so resizing is exercised) and the tensor this
    spec makes of them. Stored in golden.npz; inference must reproduce the tensor from the images."""
    rng = np.random.default_rng([seed, 0x9E9B0C])
    height, width = int(spec.height) * 3 // 2 + 7, int(spec.width) * 5 // 4 + 3
    rows = np.linspace(0.0, 1.0, height)[:, None, None]
    cols = np.linspace(0.0, 1.0, width)[None, :, None]
    raw = []
    for _ in range(count):
        phase = rng.uniform(0, 2 * np.pi, size=(1, 1, 3))
        smooth = 127.5 + 100 * np.sin(6 * rows + 4 * cols + phase) * np.cos(3 * cols - 5 * rows + phase[..., ::-1])
        noisy = smooth + rng.normal(0, 12, size=(height, width, 3))
        raw.append(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))
    images = np.stack(raw)
    return images, preprocess_arrays(spec, images)


def preprocess_arrays(spec: PreprocessSpec, images: np.ndarray) -> np.ndarray:
    return spec.normalize(np.stack([spec.resize(Image.fromarray(image, "RGB")) for image in images]))


def check_preprocessing(spec: PreprocessSpec, raw: np.ndarray, expected: np.ndarray, abs_tol: float,
                        mean_abs_tol: float, reference_spec: "PreprocessSpec | None" = None) -> dict:
    """Re-run this runtime's preprocessing on the golden raw images. A mismatch is named as a
    preprocessing problem (with the spec fields that differ), never as 'numbers differ'."""
    actual = preprocess_arrays(spec, raw)
    if actual.shape != expected.shape:
        return {"ok": False, "reason": f"preprocessed shape {list(actual.shape)} != golden {list(expected.shape)}",
                "differing_fields": _differing(spec, reference_spec)}
    difference = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    max_abs, mean_abs = float(difference.max()), float(difference.mean())
    ok = max_abs <= abs_tol and mean_abs <= mean_abs_tol
    return {"ok": ok, "max_abs_diff": max_abs, "mean_abs_diff": mean_abs, "abs_tol": abs_tol,
            "mean_abs_tol": mean_abs_tol, "differing_fields": _differing(spec, reference_spec)}


def _differing(spec: PreprocessSpec, reference: "PreprocessSpec | None") -> dict:
    if reference is None:
        return {}
    ours, theirs = spec.to_json(), reference.to_json()
    return {key: {"here": ours[key], "training": theirs[key]} for key in ours if ours[key] != theirs[key]}
