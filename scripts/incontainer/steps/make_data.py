"""Generate a small procedural image-classification dataset (no downloads needed).

Each class is a shape with a characteristic hue; position, scale, rotation, hue jitter,
background gradient and pixel noise vary per image, so the task needs real features
but is learnable by a from-scratch ResNet in a few hundred steps.
"""
from __future__ import annotations

import argparse
import colorsys
import io
import math
import os
import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..common import InsideError, atomic_write_bytes, atomic_write_json, atomic_write_text, log, run_main
from ..contract import FLAG_OUT, LABELS_FILE, MODULES

SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond", "star", "stripes", "checker", "dots")
SPLIT_CODES = {"train": 1, "val": 2}
SUPERSAMPLE = 2  # draw large and downscale: antialiased edges without depending on ImageDraw AA


@dataclass(frozen=True)
class MakeDataConfig:
    out: str
    seed: int = 0
    classes: int = 5
    train_per_class: int = 60
    val_per_class: int = 20
    size: int = 64


def parse_args(argv: Sequence[str] | None) -> MakeDataConfig:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULES['data']}", description=__doc__)
    parser.add_argument(FLAG_OUT, required=True, help="output directory (train/, val/, labels.txt)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--train-per-class", type=int, default=60)
    parser.add_argument("--val-per-class", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args(argv)
    config = MakeDataConfig(
        out=args.out, seed=args.seed, classes=args.classes,
        train_per_class=args.train_per_class, val_per_class=args.val_per_class, size=args.size,
    )
    if config.classes < 2:
        raise InsideError(f"--classes {config.classes}: a classifier needs at least 2 classes")
    if config.train_per_class < 1 or config.val_per_class < 0:
        raise InsideError("--train-per-class must be >= 1 and --val-per-class >= 0")
    if config.size < 16:
        raise InsideError(f"--size {config.size}: use at least 16 pixels so shapes stay recognisable")
    return config


def class_names(count: int) -> list[str]:
    names = []
    for index in range(count):
        shape = SHAPES[index % len(SHAPES)]
        names.append(shape if index < len(SHAPES) else f"{shape}{index // len(SHAPES)}")
    return names


def class_hue(index: int, count: int) -> float:
    # Spread hues evenly but offset by the shape cycle so repeated shapes get different colours.
    return (index / count + 0.5 * (index // len(SHAPES)) / max(1, count)) % 1.0


def hsv_to_rgb255(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    red, green, blue = colorsys.hsv_to_rgb(hue % 1.0, min(max(saturation, 0), 1), min(max(value, 0), 1))
    return int(round(red * 255)), int(round(green * 255)), int(round(blue * 255))


def rotated(points: list[tuple[float, float]], center: tuple[float, float], angle: float) -> list[tuple[float, float]]:
    cos, sin = math.cos(angle), math.sin(angle)
    cx, cy = center
    return [(cx + (x - cx) * cos - (y - cy) * sin, cy + (x - cx) * sin + (y - cy) * cos) for x, y in points]


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, radius: float,
               angle: float, colour: tuple[int, int, int], rng: np.random.Generator) -> None:
    r = radius
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=colour, width=max(2, int(r * 0.35)))
    elif shape == "square":
        draw.polygon(rotated([(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)], (cx, cy), angle), fill=colour)
    elif shape == "diamond":
        draw.polygon(rotated([(cx, cy - r), (cx + 0.6 * r, cy), (cx, cy + r), (cx - 0.6 * r, cy)], (cx, cy), angle), fill=colour)
    elif shape == "triangle":
        points = [(cx + r * math.cos(angle + k * 2 * math.pi / 3), cy + r * math.sin(angle + k * 2 * math.pi / 3)) for k in range(3)]
        draw.polygon(points, fill=colour)
    elif shape == "star":
        points = []
        for k in range(10):
            reach = r if k % 2 == 0 else 0.45 * r
            points.append((cx + reach * math.cos(angle + k * math.pi / 5), cy + reach * math.sin(angle + k * math.pi / 5)))
        draw.polygon(points, fill=colour)
    elif shape == "cross":
        arm = 0.3 * r
        for dx, dy in ((r, arm), (arm, r)):
            draw.polygon(rotated([(cx - dx, cy - dy), (cx + dx, cy - dy), (cx + dx, cy + dy), (cx - dx, cy + dy)], (cx, cy), angle), fill=colour)
    elif shape == "stripes":
        step = max(3.0, r / 2.5)
        for offset in np.arange(-r, r, step * 2):
            draw.polygon(rotated([(cx - r, cy + offset), (cx + r, cy + offset), (cx + r, cy + offset + step), (cx - r, cy + offset + step)], (cx, cy), angle), fill=colour)
    elif shape == "checker":
        cell = r / 2
        for row in range(4):
            for col in range(4):
                if (row + col) % 2 == 0:
                    x0, y0 = cx - r + col * cell, cy - r + row * cell
                    draw.polygon(rotated([(x0, y0), (x0 + cell, y0), (x0 + cell, y0 + cell), (x0, y0 + cell)], (cx, cy), angle), fill=colour)
    elif shape == "dots":
        dot = r * 0.22
        for _ in range(7):
            px, py = cx + rng.uniform(-r, r) * 0.8, cy + rng.uniform(-r, r) * 0.8
            draw.ellipse([px - dot, py - dot, px + dot, py + dot], fill=colour)
    else:  # pragma: no cover - SHAPES is closed
        raise ValueError(shape)


def render_image(seed: int, split: str, class_index: int, image_index: int, class_count: int, size: int) -> bytes:
    # A per-image seed keeps each file stable even if other counts change.
    rng = np.random.default_rng([seed, SPLIT_CODES[split], class_index, image_index])
    canvas = size * SUPERSAMPLE

    # Background: a random low-saturation gradient, so colour alone is not a shortcut.
    top = np.array(hsv_to_rgb255(rng.uniform(), rng.uniform(0.0, 0.35), rng.uniform(0.25, 0.95)), dtype=np.float64)
    bottom = np.array(hsv_to_rgb255(rng.uniform(), rng.uniform(0.0, 0.35), rng.uniform(0.25, 0.95)), dtype=np.float64)
    ramp = np.linspace(0.0, 1.0, canvas)[:, None, None]
    background = top * (1 - ramp) + bottom * ramp
    if rng.uniform() < 0.5:
        background = background.transpose(1, 0, 2)
    background = np.broadcast_to(background, (canvas, canvas, 3)).astype(np.uint8)
    image = Image.fromarray(np.ascontiguousarray(background), mode="RGB")
    draw = ImageDraw.Draw(image)

    # A faint distractor blob of random colour.
    if rng.uniform() < 0.5:
        bx, by, br = rng.uniform(0, canvas), rng.uniform(0, canvas), rng.uniform(0.05, 0.15) * canvas
        draw.ellipse([bx - br, by - br, bx + br, by + br], fill=hsv_to_rgb255(rng.uniform(), 0.3, rng.uniform(0.3, 0.9)))

    shape = SHAPES[class_index % len(SHAPES)]
    hue = class_hue(class_index, class_count) + rng.normal(0, 0.04)
    colour = hsv_to_rgb255(hue, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0))
    radius = rng.uniform(0.2, 0.38) * canvas
    cx = rng.uniform(radius, canvas - radius)
    cy = rng.uniform(radius, canvas - radius)
    draw_shape(draw, shape, cx, cy, radius, rng.uniform(0, 2 * math.pi), colour, rng)

    image = image.resize((size, size), resample=Image.BILINEAR)
    noisy = np.asarray(image, dtype=np.float64) + rng.normal(0, rng.uniform(2, 12), size=(size, size, 3))
    image = Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8), mode="RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def make_dataset(config: MakeDataConfig) -> dict:
    names = class_names(config.classes)
    counts = {"train": config.train_per_class, "val": config.val_per_class}
    written = 0
    for split, per_class in counts.items():
        for class_index, name in enumerate(names):
            directory = os.path.join(config.out, split, name)
            os.makedirs(directory, exist_ok=True)
            for image_index in range(per_class):
                data = render_image(config.seed, split, class_index, image_index, config.classes, config.size)
                atomic_write_bytes(os.path.join(directory, f"{name}_{image_index:04d}.png"), data)
                written += 1
        log(f"make_data: {split}: {per_class * len(names)} images")
    atomic_write_text(os.path.join(config.out, LABELS_FILE), "".join(name + "\n" for name in names))
    # Recorded without the output path so the file is identical wherever the data lands.
    recorded = dataclasses.asdict(config)
    recorded.pop("out")
    atomic_write_json(os.path.join(config.out, "make_data.json"), {"config": recorded, "class_names": names, "images": written})
    return {"images": written, "classes": names}


def main(argv: Sequence[str] | None = None) -> int | None:
    config = parse_args(argv)
    try:
        os.makedirs(config.out, exist_ok=True)
    except OSError as error:
        raise InsideError(f"cannot create output directory {config.out} ({error.strerror}); choose a writable --out") from None
    summary = make_dataset(config)
    log(f"make_data: wrote {summary['images']} images for classes {', '.join(summary['classes'])} to {config.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
