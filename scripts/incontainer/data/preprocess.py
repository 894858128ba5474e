"""The preprocessing contract shared by training, the manifest and inference, with slim's presets.

A PreprocessSpec turns a decoded image into the float32 HxWx3 tensor a model's input expects. It is
recorded in the manifest, so inference never guesses. Presets are named as slim's
preprocessing_factory names them and reproduce slim's *evaluation* transforms step by step, in
numpy, so they run the same in every runtime (TensorFlow, ONNX Runtime, OpenVINO):

- ``vgg``: aspect-preserving bilinear resize of the smaller side to 256 (TF1's resize_bilinear,
  align_corners=False), central crop to the model size, RGB mean subtraction (123.68, 116.78,
  103.94), no scaling;
- ``inception``: scale to [0, 1], central crop of 0.875, TF1 bilinear resize, then (x - 0.5) * 2;
- ``coldchain``: the kit's own: Pillow bilinear resize of the whole image, then (x - 127.5) / 127.5.

The decoder is part of the spec (decode.py): slim's presets decode as slim's evaluation does
(TensorFlow's decode_jpeg, fast integer IDCT); the kit's own preset with Pillow, as its models were
trained. A spec runs in three stages a golden can be compared at: decode, resize/crop, normalise.
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, Mapping, Sequence, Tuple

import numpy as np
from PIL import Image

from ..common import InsideError
from ..contract import FLAG_PREPROCESSING
from .decode import DECODERS, OPENCV, OTHER_IDCT, PILLOW, TENSORFLOW, other_idct

PRESETS = ("coldchain", "vgg", "inception")
CUSTOM = "custom"  # a spec whose fields no longer match its preset
RESIZE_METHODS = ("bilinear", "bicubic", "nearest")
# tf1: TensorFlow 1's resize_bilinear, align_corners=False (slim's); tf2: tf.image.resize (half-pixel
# centres), tf2-antialias: the same with antialias=True; opencv: cv2.resize INTER_LINEAR.
RESIZE_LIBRARIES = ("pillow", "tf1", "tf2", "tf2-antialias", "opencv")
STAGES = ("decode", "resize/crop", "normalise")
# Pillow's bilinear downscale filters over the whole footprint, as tf.image.resize(antialias=True) does.
ANTIALIASED = ("pillow", "tf2-antialias")
# A drift case's relative override: this spec's resize with antialiasing switched the other way.
TOGGLE_ANTIALIAS = "toggle-antialias"
CROPS = ("none", "aspect-central", "central-fraction")
VALUE_RANGES = ("0-255", "0-1")  # pixels are divided by 255 before resizing in "0-1" (slim's inception)
ALPHA_HANDLING = ("composite_on_white", "drop")
ORIENTATION = ("exif_transpose", "none")
VGG_MEANS = (123.68, 116.78, 103.94)
_FIELD_TYPES = {"height": int, "width": int, "resize_side": int, "central_fraction": float}


@dataclass(frozen=True)
class PreprocessSpec:
    """Everything needed to turn an image file into the graph's input tensor."""

    height: int
    width: int
    preset: str = "coldchain"
    resize_method: str = "bilinear"
    resize_library: str = "pillow"
    crop: str = "none"
    resize_side: int = 0  # aspect-central: the smaller side is resized to this first
    central_fraction: float = 0.0  # central-fraction: the part of the image kept before resizing
    value_range: str = "0-255"
    channel_order: str = "RGB"
    alpha_handling: str = "composite_on_white"
    orientation: str = "exif_transpose"
    mean: Tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: Tuple[float, float, float] = (127.5, 127.5, 127.5)
    dtype: str = "float32"
    layout: str = "NHWC"
    # Manifests written before the decoder was recorded were decoded with Pillow.
    decoder: str = PILLOW

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, value: Any, source: str) -> "PreprocessSpec":
        if not isinstance(value, Mapping):
            raise InsideError(f"preprocessing spec in {source} is not an object; re-run freeze (or adopt) to write it")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise InsideError(f"preprocessing spec in {source} has fields {unknown} this version does not understand; "
                              "use the coldchain release that produced the model")
        try:
            spec = cls(**{key: tuple(item) if isinstance(item, list) else item for key, item in value.items()})
        except TypeError as error:
            raise InsideError(f"preprocessing spec in {source} is incomplete ({error}); re-run freeze") from None
        spec.validate(source)
        return spec

    def validate(self, source: str) -> None:
        problems = []
        for name, allowed in (("preset", PRESETS + (CUSTOM,)), ("resize_method", RESIZE_METHODS),
                              ("resize_library", RESIZE_LIBRARIES), ("crop", CROPS), ("value_range", VALUE_RANGES),
                              ("channel_order", ("RGB", "BGR")), ("alpha_handling", ALPHA_HANDLING),
                              ("orientation", ORIENTATION), ("decoder", DECODERS)):
            if getattr(self, name) not in allowed:
                problems.append(f"{name} {getattr(self, name)!r} (supported: {', '.join(allowed)})")
        if self.resize_library != "pillow" and self.resize_method != "bilinear":
            problems.append(f"resize_library {self.resize_library} implements bilinear only")
        if self.decoder == OPENCV and self.alpha_handling != "drop":
            problems.append("decoder opencv drops alpha as cv2.imdecode(IMREAD_COLOR) does: set alpha_handling=drop")
        if self.dtype != "float32" or self.layout != "NHWC":
            problems.append(f"dtype/layout {self.dtype}/{self.layout} (only float32/NHWC)")
        if len(self.mean) != 3 or len(self.std) != 3 or any(value == 0 for value in self.std):
            problems.append("mean/std must have 3 entries and std must be non-zero")
        if not isinstance(self.height, int) or not isinstance(self.width, int) or self.height < 1 or self.width < 1:
            problems.append(f"size {self.height!r}x{self.width!r}")
        if self.crop == "aspect-central" and self.resize_side < max(int(self.height), int(self.width)):
            problems.append(f"resize_side {self.resize_side} is smaller than the {self.height}x{self.width} crop")
        if self.crop == "central-fraction" and not 0.0 < float(self.central_fraction) <= 1.0:
            problems.append(f"central_fraction {self.central_fraction} (must be in (0, 1])")
        if problems:
            raise InsideError(f"unsupported preprocessing in {source}: {'; '.join(problems)}")

    @property
    def level(self) -> float:
        """One uint8 level of the input image, in the units of the model's input tensor."""
        scale = 1.0 / 255.0 if self.value_range == "0-1" else 1.0
        return scale / min(abs(value) for value in self.std)

    def apply(self, image: Image.Image) -> np.ndarray:
        """A decoded RGB image -> the float32 HxWx3 input tensor, step by step as the preset does it."""
        return self.normalise(self.resize_crop(image))

    def resize_crop(self, image: Image.Image) -> np.ndarray:
        """The resize/crop stage: HxWx3 in the value range, before channel order and normalisation."""
        pixels = np.asarray(image.convert("RGB") if image.mode != "RGB" else image, dtype=np.uint8)
        if self.crop == "none":
            return _resize(self, image, pixels, self.height, self.width)
        if self.crop == "aspect-central":
            height, width = smallest_size_at_least(pixels.shape[0], pixels.shape[1], self.resize_side)
            return _central_crop(_resize(self, image, pixels, height, width), self.height, self.width)
        # slim scales to [0, 1] before cropping; cropping moves no value, so cropping first is the same.
        return _resize(self, None, _central_fraction(pixels, self.central_fraction), self.height, self.width)

    def normalise(self, array: np.ndarray) -> np.ndarray:
        """The last stage: channel order, then (x - mean) / std in float32."""
        if self.channel_order == "BGR":
            array = array[..., ::-1]
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return ((array.astype(np.float32) - mean) / std).astype(np.float32)


def _to_range(spec: PreprocessSpec, pixels: np.ndarray) -> np.ndarray:
    # tf.image.convert_image_dtype: cast, then multiply by a float32 1/255.
    return pixels.astype(np.float32) * np.float32(1.0 / 255.0) if spec.value_range == "0-1" else pixels


def _resize(spec: PreprocessSpec, image, pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    if spec.resize_library == "tf1":
        return resize_bilinear_tf1(_to_range(spec, pixels) if pixels.dtype == np.uint8 else pixels, height, width)
    if spec.resize_library in ("tf2", "tf2-antialias"):
        return resize_tf2(_to_range(spec, pixels), height, width, spec.resize_library == "tf2-antialias")
    if spec.resize_library == "opencv":
        return _resize_opencv(_to_range(spec, pixels), height, width)
    if image is None:
        image = Image.fromarray(pixels)
    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}[spec.resize_method]
    if image.size != (width, height):
        image = image.resize((width, height), resample=resample)
    array = np.asarray(image.convert("RGB") if image.mode != "RGB" else image, dtype=np.uint8).reshape(height, width, 3)
    return _to_range(spec, array)


def _resize_opencv(array: np.ndarray, height: int, width: int) -> np.ndarray:
    try:
        import cv2
    except ImportError:
        raise InsideError("the preprocessing resizes with OpenCV (cv2.resize), which is not installed in this "
                          "environment; install opencv-python-headless at the version the manifest names") from None
    if array.shape[:2] == (height, width):
        return array
    return cv2.resize(np.ascontiguousarray(array), (width, height), interpolation=cv2.INTER_LINEAR)


_TF2_RESIZE: dict = {}


def resize_tf2(array: np.ndarray, height: int, width: int, antialias: bool) -> np.ndarray:
    """tf.image.resize(bilinear) as TF2 code calls it (half-pixel centres), by TensorFlow itself in a
    graph of its own: float32 out, as TF returns it."""
    try:
        import tensorflow as tf
    except ImportError:
        raise InsideError("the preprocessing resizes with TensorFlow 2's tf.image.resize, and TensorFlow is not "
                          "installed in this environment; run it in an image with TensorFlow") from None
    key = (array.dtype.str, antialias)
    if key not in _TF2_RESIZE:
        graph = tf.Graph()
        with graph.as_default():
            source = tf.compat.v1.placeholder(tf.as_dtype(array.dtype), shape=[None, None, 3])
            size = tf.compat.v1.placeholder(tf.int32, shape=[2])
            resized = tf.image.resize(source, size, method="bilinear", antialias=antialias)
        config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1,
                                          device_count={"GPU": 0})
        _TF2_RESIZE[key] = (tf.compat.v1.Session(graph=graph, config=config), source, size, resized)
    session, source, size, resized = _TF2_RESIZE[key]
    return session.run(resized, {source: array, size: [height, width]}).astype(np.float32)


def smallest_size_at_least(height: int, width: int, smallest_side: int) -> Tuple[int, int]:
    """slim's _smallest_size_at_least, in float32 as TF computes it, rounded with rint."""
    h, w, side = np.float32(height), np.float32(width), np.float32(smallest_side)
    scale = side / w if h > w else side / h
    return int(np.rint(h * scale)), int(np.rint(w * scale))


def _central_crop(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """slim's vgg _central_crop: offsets (size - crop) / 2, truncated."""
    if array.shape[0] < height or array.shape[1] < width:
        raise InsideError(f"image of {array.shape[0]}x{array.shape[1]} is smaller than the {height}x{width} crop")
    top, left = (array.shape[0] - height) // 2, (array.shape[1] - width) // 2
    return array[top:top + height, left:left + width]


def _central_fraction(array: np.ndarray, fraction: float) -> np.ndarray:
    """tf.image.central_crop: start = int((size - size * fraction) / 2) in float64, kept size - 2 * start."""
    height, width = array.shape[:2]
    top = int((float(height) - float(height) * fraction) / 2)
    left = int((float(width) - float(width) * fraction) / 2)
    return array[top:height - top, left:width - left]


def resize_bilinear_tf1(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """TensorFlow 1's resize_bilinear with align_corners=False and half_pixel_centers=False (what
    slim calls), in float32 with the kernel's own operation order: no antialiasing, sample point
    i * in/out, lower = floor, upper = min(ceil, size - 1)."""
    source = array.astype(np.float32)
    in_height, in_width = source.shape[:2]

    def weights(out_size: int, in_size: int):
        scale = np.float32(in_size) / np.float32(out_size)
        positions = np.arange(out_size, dtype=np.float32) * scale
        floor = np.floor(positions)
        lower = np.maximum(floor.astype(np.int64), 0)
        upper = np.minimum(np.ceil(positions).astype(np.int64), in_size - 1)
        return lower, upper, (positions - floor).astype(np.float32)

    y_lower, y_upper, y_lerp = weights(height, in_height)
    x_lower, x_upper, x_lerp = weights(width, in_width)
    x_lerp = x_lerp[None, :, None]
    top_left, top_right = source[y_lower][:, x_lower], source[y_lower][:, x_upper]
    bottom_left, bottom_right = source[y_upper][:, x_lower], source[y_upper][:, x_upper]
    top = top_left + (top_right - top_left) * x_lerp
    bottom = bottom_left + (bottom_right - bottom_left) * x_lerp
    return (top + (bottom - top) * y_lerp[:, None, None]).astype(np.float32)


def vgg_resize_side(height: int, width: int) -> int:
    """slim resizes the smaller side to 256 for its 224-pixel models; other sizes keep that ratio."""
    return max(height, width, int(round(256 * max(height, width) / 224)))


def preset_spec(name: str, height: int, width: int, source: str = FLAG_PREPROCESSING) -> PreprocessSpec:
    """The spec a preset name stands for, at the model's input size."""
    if name == "coldchain":
        spec = PreprocessSpec(height=height, width=width)
    elif name == "vgg":
        spec = PreprocessSpec(height=height, width=width, preset="vgg", resize_library="tf1", crop="aspect-central",
                              resize_side=vgg_resize_side(height, width),
                              alpha_handling="drop", orientation="none", mean=VGG_MEANS, std=(1.0, 1.0, 1.0),
                              decoder=TENSORFLOW)
    elif name == "inception":
        spec = PreprocessSpec(height=height, width=width, preset="inception", resize_library="tf1",
                              crop="central-fraction", central_fraction=0.875, value_range="0-1",
                              alpha_handling="drop", orientation="none", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                              decoder=TENSORFLOW)
    else:
        close = difflib.get_close_matches(name, PRESETS, n=1, cutoff=0.4)
        hint = f"did you mean {close[0]!r}?" if close else f"presets: {', '.join(PRESETS)}"
        raise InsideError(f"{source} {name!r} is not a preprocessing preset; {hint}")
    spec.validate(source)
    return spec


def with_fields(spec: PreprocessSpec, overrides: Sequence[str], source: str) -> PreprocessSpec:
    """The spec with FIELD=VALUE overrides; a spec changed away from its preset is 'custom'."""
    if not overrides:
        return spec
    current = spec.to_json()
    changes: dict = {}
    for item in overrides:
        key, separator, value = item.partition("=")
        if not separator or key not in current:
            close = difflib.get_close_matches(key, list(current), n=1, cutoff=0.5)
            raise InsideError(f"{source} {item!r}: unknown field {key!r}"
                              + (f"; did you mean {close[0]!r}?" if close else f" (fields: {', '.join(current)})"))
        if key == "decoder" and value == OTHER_IDCT:
            value = other_idct(spec.decoder)
        elif key == "resize_library" and value == TOGGLE_ANTIALIAS:
            value = "tf2" if spec.resize_library in ANTIALIASED else "tf2-antialias"
        try:
            if isinstance(current[key], (tuple, list)):
                changes[key] = tuple(float(part) for part in value.split(","))
            else:
                changes[key] = _FIELD_TYPES.get(key, type(current[key]))(value)
        except ValueError:
            raise InsideError(f"{source} {item!r}: {value!r} is not a valid {key}") from None
    if "preset" not in changes:
        changes["preset"] = CUSTOM if spec.preset != CUSTOM else spec.preset
    changed = dataclasses.replace(spec, **changes)
    changed.validate(source)
    return changed


def preprocessing_probe(spec: PreprocessSpec, seed: int, count: int = 2) -> Tuple[np.ndarray, np.ndarray]:
    """Raw RGB images (larger than the model input, so resizing and cropping are exercised) and the
    tensor this spec makes of them. Stored in golden.npz; inference must reproduce the tensor."""
    rng = np.random.default_rng([seed, 0x9E9B0C])
    height, width = probe_raw_size(spec)
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


def probe_raw_size(spec: PreprocessSpec) -> Tuple[int, int]:
    base_height, base_width = int(spec.height), int(spec.width)
    if spec.crop == "aspect-central":
        base_height = base_width = max(base_height, base_width, int(spec.resize_side))
    return base_height * 3 // 2 + 7, base_width * 5 // 4 + 3


def preprocess_arrays(spec: PreprocessSpec, images: np.ndarray) -> np.ndarray:
    return np.stack([spec.apply(Image.fromarray(image, "RGB")) for image in images])


def check_preprocessing(spec: PreprocessSpec, raw: np.ndarray, expected: np.ndarray, abs_tol: float,
                        mean_abs_tol: float, reference_spec: "PreprocessSpec | None" = None) -> dict:
    """Re-run this runtime's preprocessing on the golden raw images. A mismatch is named as a
    preprocessing problem (with the spec fields that differ), never as 'numbers differ'."""
    actual = preprocess_arrays(spec, raw)
    if actual.shape != expected.shape:
        return {"ok": False, "reason": f"preprocessed shape {list(actual.shape)} != golden {list(expected.shape)}",
                "differing_fields": differing_fields(spec, reference_spec), "level": spec.level}
    difference = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    max_abs, mean_abs = float(difference.max()), float(difference.mean())
    ok = max_abs <= abs_tol and mean_abs <= mean_abs_tol
    return {"ok": ok, "max_abs_diff": max_abs, "mean_abs_diff": mean_abs, "abs_tol": abs_tol,
            "mean_abs_tol": mean_abs_tol, "level": spec.level,
            "differing_fields": differing_fields(spec, reference_spec)}


def differing_fields(spec: PreprocessSpec, reference: "PreprocessSpec | None") -> dict:
    if reference is None:
        return {}
    ours, theirs = spec.to_json(), reference.to_json()
    return {key: {"here": ours[key], "training": theirs[key]} for key in ours if ours[key] != theirs[key]}


def tolerances(spec: PreprocessSpec) -> dict:
    """One or two uint8 levels are resampling round-off (Pillow releases differ there); a different
    spec moves most pixels by many levels."""
    return {"abs_tol": 2.0 * spec.level, "mean_abs_tol": 0.5 * spec.level}
