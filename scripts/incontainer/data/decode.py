"""Encoded file -> 8-bit pixels, with the decoder the model's pipeline used: part of the
preprocessing, because one uint8 level per pixel moves a ResNet's probabilities by several hundredths.

- ``tensorflow``: TensorFlow's own ops as slim's eval_image_classifier runs them: decode_jpeg with
  its default DCT (INTEGER_FAST, libjpeg-turbo's fast integer IDCT), decode_image for the rest;
- ``tensorflow-accurate``: the same with dct_method INTEGER_ACCURATE (what Pillow computes too);
- ``pillow``: Pillow (libjpeg-turbo, accurate integer IDCT): the kit's own models;
- ``opencv``: cv2.imdecode(IMREAD_COLOR) as OpenCV pipelines read files, BGR turned into RGB.

The orientation (EXIF) and alpha steps after decoding are shared by every decoder, so changing the
decoder changes only the decoded pixels. Where TensorFlow is not installed, its decoding is
reproduced pixel for pixel (simplejpeg with TensorFlow's settings, Pillow for PNG; tested); any other
decoder this environment lacks is refused by name, never replaced by another one.
"""
from __future__ import annotations

import io
import threading
import warnings
from typing import Optional

import numpy as np
from PIL import Image, ImageOps

from ..common import InsideError

TENSORFLOW, TENSORFLOW_ACCURATE, PILLOW, OPENCV = "tensorflow", "tensorflow-accurate", "pillow", "opencv"
DECODERS = (TENSORFLOW, TENSORFLOW_ACCURATE, PILLOW, OPENCV)
# The decoders' JPEG inverse DCTs, as libjpeg names them.
IDCT = {TENSORFLOW: "INTEGER_FAST (JDCT_IFAST)", TENSORFLOW_ACCURATE: "INTEGER_ACCURATE (JDCT_ISLOW)",
        PILLOW: "INTEGER_ACCURATE (JDCT_ISLOW)", OPENCV: "INTEGER_ACCURATE (JDCT_ISLOW)"}
# "the other IDCT method" for a decoder: a drift case's relative override (decoder=other-idct).
OTHER_IDCT = "other-idct"
_OTHER = {TENSORFLOW: TENSORFLOW_ACCURATE, TENSORFLOW_ACCURATE: TENSORFLOW, PILLOW: TENSORFLOW, OPENCV: TENSORFLOW}
JPEG_MAGIC = b"\xff\xd8\xff"


class DecodeError(InsideError):
    """One file this decoder cannot read; image_files turns it into a BadImageError."""


class DecoderUnavailable(InsideError):
    """The model's decoder is not installed here: refused, never replaced by another decoder."""


def other_idct(decoder: str) -> str:
    return _OTHER[decoder]


def is_jpeg(data: bytes) -> bool:
    return data[:3] == JPEG_MAGIC


def decode_pixels(data: bytes, source: str, decoder: str, drop_alpha: bool) -> np.ndarray:
    """HxWx3 (or HxWx4 where alpha is kept for compositing) uint8 pixels, orientation untouched."""
    if decoder in (TENSORFLOW, TENSORFLOW_ACCURATE):
        tensorflow = _tensorflow()
        if tensorflow is None:
            return without_tensorflow(data, source, decoder == TENSORFLOW_ACCURATE, drop_alpha)
        return tensorflow.decode(data, source, decoder == TENSORFLOW_ACCURATE, drop_alpha)
    if decoder == OPENCV:
        return _opencv_decode(data, source)
    raise InsideError(f"decode_pixels has no {decoder!r} decoder (pillow decodes in image_files)")


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation tag (1 = upright) read from the header alone, without decoding."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return int(image.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - unreadable EXIF leaves the image as stored
        return 1


def orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """What ImageOps.exif_transpose does for each tag, on the array (lossless, exact)."""
    turn = Image.Transpose
    method = {2: turn.FLIP_LEFT_RIGHT, 3: turn.ROTATE_180, 4: turn.FLIP_TOP_BOTTOM, 5: turn.TRANSPOSE,
              6: turn.ROTATE_270, 7: turn.TRANSVERSE, 8: turn.ROTATE_90}.get(orientation)
    if method is None:
        return pixels
    return np.asarray(Image.fromarray(pixels).transpose(method))


def check_size(data: bytes, source: str) -> None:
    """Pillow's decompression-bomb limit, read from the header, for decoders that have none."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            width, height = Image.MAX_IMAGE_PIXELS or 0, 2
        except Exception:  # noqa: BLE001 - the decoder itself names an unreadable file
            return
    if Image.MAX_IMAGE_PIXELS and width * height > Image.MAX_IMAGE_PIXELS:
        raise DecodeError(f"image {source} is too large to decode safely (over {Image.MAX_IMAGE_PIXELS} pixels); "
                          "downscale it before use")


class _TensorFlowDecoder:
    """decode_jpeg / decode_image in a graph of their own: the same ops in graph and eager processes,
    TF 2.7 to 2.21, without touching the model's graph or session."""

    def __init__(self):
        import tensorflow as tf

        self.tf = tf
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.data = tf.compat.v1.placeholder(tf.string, shape=[])
            self.outputs = {}
            for accurate in (False, True):
                method = "INTEGER_ACCURATE" if accurate else "INTEGER_FAST"
                self.outputs[("jpeg", accurate)] = tf.io.decode_jpeg(self.data, channels=3, dct_method=method)
            self.outputs[("other", 3)] = tf.io.decode_image(self.data, channels=3, expand_animations=False)
            self.outputs[("other", 4)] = tf.io.decode_image(self.data, channels=4, expand_animations=False)
        config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1,
                                          device_count={"GPU": 0})
        self.session = tf.compat.v1.Session(graph=self.graph, config=config)

    def decode(self, data: bytes, source: str, accurate: bool, drop_alpha: bool) -> np.ndarray:
        key = ("jpeg", accurate) if is_jpeg(data) else ("other", 3 if drop_alpha else 4)
        try:
            return self.session.run(self.outputs[key], {self.data: data})
        except self.tf.errors.OpError as error:
            message = str(error).strip().splitlines()[0][:200]
            raise DecodeError(f"TensorFlow cannot decode {source} ({message}); re-export it as PNG or JPEG") from None


_DECODER: Optional[_TensorFlowDecoder] = None
_NO_TENSORFLOW = object()
_DECODER_LOCK = threading.Lock()


def _tensorflow() -> Optional[_TensorFlowDecoder]:
    """TensorFlow's own decoder; None where TensorFlow is not installed."""
    global _DECODER
    with _DECODER_LOCK:
        if _DECODER is None:
            try:
                _DECODER = _TensorFlowDecoder()
            except ImportError:
                _DECODER = _NO_TENSORFLOW
        return None if _DECODER is _NO_TENSORFLOW else _DECODER


def without_tensorflow(data: bytes, source: str, accurate: bool, drop_alpha: bool) -> np.ndarray:
    """TensorFlow's decoding where TensorFlow is absent: JPEG by simplejpeg's libjpeg-turbo with
    TensorFlow's settings (the same IDCT, fancy upsampling, RGB out), PNG by Pillow (lossless, the
    same 8-bit pixels). Both proven identical to TensorFlow's ops in tests/test_presets_docker.py;
    anything else is refused rather than decoded another way."""
    if is_jpeg(data):
        try:
            import simplejpeg
        except ImportError:
            raise DecoderUnavailable(
                "the model's preprocessing decodes JPEG as TensorFlow does (decode_jpeg, as slim does), and neither "
                "TensorFlow nor simplejpeg is installed in this environment; install one of them (pip install "
                "simplejpeg), or re-adopt the model with --preprocessing-field decoder=pillow") from None
        try:
            return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=not accurate, fastupsample=False)
        except ValueError as error:
            raise DecodeError(f"cannot decode {source} ({error}); re-export it as PNG or JPEG") from None
    with Image.open(io.BytesIO(data)) as image:
        if image.format != "PNG" or image.mode not in ("RGB", "RGBA", "L", "LA", "P"):
            raise DecoderUnavailable(
                f"{source} is a {image.format} {image.mode} image, which only TensorFlow itself decodes as "
                "the model's preprocessing says, and TensorFlow is not installed here; convert it to 8-bit PNG or "
                "JPEG, or run in an image with TensorFlow")
        image.load()
        return np.asarray(image.convert("RGB" if drop_alpha else "RGBA"))


def _opencv_decode(data: bytes, source: str) -> np.ndarray:
    try:
        import cv2
    except ImportError:
        raise DecoderUnavailable(
            "the model's preprocessing decodes with OpenCV (cv2.imdecode), which is not installed in this "
            "environment; install opencv-python-headless at the version the manifest names") from None
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if pixels is None:
        raise DecodeError(f"OpenCV cannot decode {source}; re-export it as PNG or JPEG")
    return np.ascontiguousarray(pixels[..., ::-1])  # OpenCV's BGR: the spec's channel_order decides what is fed


def identity(decoder: str) -> dict:
    """The decoder's library and version, and for JPEG its libjpeg and IDCT: recorded with the golden,
    compared wherever the model runs."""
    found: dict = {"decoder": decoder, "jpeg_idct": IDCT[decoder]}
    try:
        if decoder in (TENSORFLOW, TENSORFLOW_ACCURATE) and _tensorflow() is None:
            import simplejpeg

            found.update(library="simplejpeg (TensorFlow's settings; PNG by Pillow)", version=simplejpeg.__version__,
                         jpeg_library="libjpeg-turbo built into simplejpeg")
        elif decoder in (TENSORFLOW, TENSORFLOW_ACCURATE):
            import tensorflow as tf

            found.update(library="tensorflow", version=tf.__version__,
                         jpeg_library="libjpeg-turbo built into TensorFlow")
        elif decoder == OPENCV:
            import cv2

            jpeg = next((line.split(":", 1)[1].strip() for line in cv2.getBuildInformation().splitlines()
                         if line.strip().startswith("JPEG:")), "unknown")
            found.update(library="opencv-python-headless", version=cv2.__version__, jpeg_library=jpeg)
        else:
            import PIL
            from PIL import features

            turbo = features.check_feature("libjpeg_turbo") and features.version("libjpeg_turbo")
            found.update(library="pillow", version=PIL.__version__,
                         jpeg_library=f"libjpeg-turbo {turbo}" if turbo else f"libjpeg {features.version('jpg')}")
    except ImportError:
        found["library"] = "not installed"
    return found


def apply_exif(pixels: np.ndarray, data: bytes) -> np.ndarray:
    return orient(pixels, exif_orientation(data))


def pillow_upright(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - malformed EXIF should not make a readable image unusable
        return image
