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
