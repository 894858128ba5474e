"""Decode any image file Pillow understands into 8-bit RGB, the one form training and inference share.

Kept free of TensorFlow so the same decoding runs byte-for-byte in every container.
"""
from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..common import InsideError
from ..confine import Refused, inside, read_bounded
from .decode import PILLOW, DecodeError, apply_exif, check_size, decode_pixels, pillow_upright

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
WHITE = (255, 255, 255)


class BadImageError(InsideError):
    """One unusable image; callers decide whether `--on-bad-image skip` lets them continue."""


def is_image_filename(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def decode_image_file(path: str, orientation: str = "exif_transpose", alpha: str = "composite_on_white",
                      decoder: str = "pillow") -> Image.Image:
    try:
        data = read_bounded(path, "image")  # a regular file, bounded: never /dev/zero read forever
    except FileNotFoundError:
        raise BadImageError(f"image not found: {path}; check the path") from None
    except IsADirectoryError:
        raise BadImageError(f"{path} is a directory, not an image") from None
    except OSError as error:
        raise BadImageError(f"cannot read image {path} ({error.strerror or error}); check permissions") from None
    return decode_image_bytes(data, path, orientation, alpha, decoder)


def for_spec(spec) -> dict:
    """The decode arguments a preprocessing spec stands for."""
    return {"orientation": spec.orientation, "alpha": spec.alpha_handling, "decoder": spec.decoder}


def decode_image_bytes(data: bytes, source: str, orientation: str = "exif_transpose",
                       alpha: str = "composite_on_white", decoder: str = "pillow") -> Image.Image:
    """An RGB PIL image; upright per EXIF unless `orientation` is "none" (TensorFlow's decoders
    ignore EXIF); alpha composited on white, or dropped as tf.image.decode_png(channels=3) does.
    `decoder` (decode.DECODERS) makes the pixels; the orientation and alpha steps are the same for all."""
    if decoder != PILLOW:
        return _decode_with(data, source, orientation, alpha, decoder)
    # Pillow only warns between MAX_IMAGE_PIXELS and twice that; promote the warning so a
    # decompression bomb is refused the same way whatever its exact size.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise BadImageError(
                f"image {source} is too large to decode safely (over Pillow's limit of "
                f"{Image.MAX_IMAGE_PIXELS} pixels); downscale it before use"
            ) from None
        except UnidentifiedImageError:
            raise BadImageError(f"{source} is not an image Pillow can identify; remove it or convert it to PNG/JPEG") from None
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise BadImageError(f"image {source} is corrupt or truncated ({error}); re-export or remove it") from None
        if orientation == "exif_transpose":
            image = pillow_upright(image)
        try:
            return to_rgb(image, alpha)
        except (OSError, ValueError) as error:
            raise BadImageError(f"image {source} could not be converted to RGB ({error}); re-export it as 8-bit RGB") from None


def _decode_with(data: bytes, source: str, orientation: str, alpha: str, decoder: str) -> Image.Image:
    check_size(data, source)
    try:
        pixels = decode_pixels(data, source, decoder, drop_alpha=alpha == "drop")
    except DecodeError as error:
        raise BadImageError(str(error)) from None
    if orientation == "exif_transpose":
        pixels = apply_exif(pixels, data)
    image = Image.fromarray(np.ascontiguousarray(pixels), "RGBA" if pixels.shape[-1] == 4 else "RGB")
    return to_rgb(image, alpha)


def to_rgb(image: Image.Image, alpha: str = "composite_on_white") -> Image.Image:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # convert("RGB") clips 16-bit values to 255 instead of scaling; rescale to 8 bits ourselves.
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode != "F" and values.max(initial=0) > 255 else 255.0
        scaled = np.clip(np.rint(values * (255.0 / peak)), 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, mode="L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        if alpha == "drop":
            return image.convert("RGB")
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode != "RGB":
        return image.convert("RGB")
    return image


def list_image_files(root: str) -> list[str]:
    """All image files under root, recursively, in a stable order independent of the filesystem."""
    found = []
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))
        for name in files:
            if not name.startswith(".") and is_image_filename(name):
                path = os.path.join(directory, name)
                if not inside(root, path):  # a link out of the folder reads what the user never passed
                    raise Refused(path, f"is a link to {os.path.realpath(path)}, outside {root}",
                                  "copy the image itself into the folder instead of linking to it")
                found.append(path)
    return sorted(found)
