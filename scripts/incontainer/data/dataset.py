"""Read a classification dataset into memory: class folders or slim-format TFRecords.

Images are decoded and preprocessed once with the shared PreprocessSpec and kept as float32, so
the training loop only feeds numpy batches (deterministic order, no tf.data threads).
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from ..common import InsideError, log, silence_tensorflow_deprecations
from ..contract import LABELS_FILE
from .image_files import BadImageError, decode_image_bytes, decode_image_file, for_spec, list_image_files
from .labels import read_labels_file
from .preprocess import PreprocessSpec

ON_BAD_IMAGE_CHOICES = ("fail", "skip")
TFRECORD_PATTERNS = ("*.tfrecord", "*.tfrecord-*", "*.tfrecords", "*.tfrecord*")
VAL_SPLIT_DIRS = ("val", "validation")
HOLDOUT_FRACTION = 0.2


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # float32 [N, H, W, 3], the model's input per the spec
    labels: np.ndarray  # int64 [N], after labels_offset
    sources: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class Dataset:
    class_names: tuple[str, ...]
    train: Split
    val: Split | None
    layout: str
    val_source: str
    skipped: tuple[str, ...] = field(default_factory=tuple)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class _Collector:
    """Decodes examples one by one, applying the --on-bad-image policy."""

    def __init__(self, spec: PreprocessSpec, on_bad_image: str):
        self.spec = spec
        self.on_bad_image = on_bad_image
        self.skipped: list[str] = []

    def collect(self, examples: Iterable[tuple[str, int, Callable[[], object]]]) -> tuple[list[np.ndarray], list[int], list[str]]:
        images, labels, sources = [], [], []
        for source, label, decode in examples:
            try:
                image = decode()
            except BadImageError as error:
                if self.on_bad_image == "skip":
                    log(f"data: skipping bad image: {error}")
                    self.skipped.append(source)
                    continue
                raise BadImageError(f"{error} (or pass --on-bad-image skip)") from None
            images.append(self.spec.apply(image))
            labels.append(label)
            sources.append(source)
        return images, labels, sources


def _make_split(images: list[np.ndarray], labels: list[int], sources: list[str], spec: PreprocessSpec) -> Split:
    stacked = np.stack(images) if images else np.zeros((0, spec.height, spec.width, 3), np.float32)
    return Split(images=stacked, labels=np.asarray(labels, dtype=np.int64), sources=tuple(sources))


def _class_dirs(root: str) -> list[str]:
    try:
        entries = sorted(os.listdir(root))
    except FileNotFoundError:
        raise InsideError(f"dataset directory not found: {root}; pass --data pointing at a folder of class subfolders") from None
    except NotADirectoryError:
        raise InsideError(f"--data {root} is a file; pass a directory of class subfolders or TFRecords") from None
    return [name for name in entries if not name.startswith(".") and os.path.isdir(os.path.join(root, name))]


def _folder_examples(root: str, class_names: Sequence[str], required: bool,
                     spec: PreprocessSpec) -> list[tuple[str, int, Callable]]:
    examples = []
    for label, name in enumerate(class_names):
        directory = os.path.join(root, name)
        if not os.path.isdir(directory):
            continue
        files = list_image_files(directory)
        if not files and required:
            raise InsideError(
                f"class folder {directory} has no images ({', '.join(('.png', '.jpg'))} ...); add images or delete the folder"
            )
        for path in files:
            examples.append((path, label, lambda path=path: decode_image_file(path, **for_spec(spec))))
    return examples


def _read_folders(root: str, spec: PreprocessSpec, collector: _Collector) -> tuple[tuple[str, ...], Split, Split | None, str, str]:
    train_root = os.path.join(root, "train")
    if os.path.isdir(train_root):
        layout = "folders:train/val"
        names = _class_dirs(train_root)
        val_root = next((os.path.join(root, d) for d in VAL_SPLIT_DIRS if os.path.isdir(os.path.join(root, d))), None)
    else:
        layout = "folders"
        train_root, val_root = root, None
        names = _class_dirs(root)
    _require_classes(names, train_root)
    train = _make_split(*collector.collect(_folder_examples(train_root, names, required=True, spec=spec)), spec)
    if val_root is None:
        return tuple(names), train, None, layout, "none"
    stray = sorted(set(_class_dirs(val_root)) - set(names))
    if stray:
        raise InsideError(f"validation folder {val_root} has classes {stray} that are not in {train_root}; rename or remove them")
    val = _make_split(*collector.collect(_folder_examples(val_root, names, required=False, spec=spec)), spec)
    return tuple(names), train, val, layout, os.path.basename(val_root)


def _require_classes(names: Sequence[str], root: str) -> None:
    if not names:
        raise InsideError(f"no class subfolders in {root}; lay images out as {root}/<class>/<image>.png")
    if len(names) == 1:
        raise InsideError(f"only one class ({names[0]}) in {root}; a classifier needs at least two class folders")


def _tfrecord_files(root: str) -> list[str]:
    found = set()
    for pattern in TFRECORD_PATTERNS:
        found.update(glob.glob(os.path.join(root, pattern)))
    return sorted(path for path in found if os.path.isfile(path))


def _tfrecord_examples(paths: Sequence[str], spec: PreprocessSpec) -> Iterable[tuple[str, int, Callable]]:
    import tensorflow as tf  # only needed for this layout; keeps folder datasets TF-free

    silence_tensorflow_deprecations()

    for path in paths:
        try:
            for index, record in enumerate(tf.compat.v1.io.tf_record_iterator(path)):
                source = f"{path}#{index}"
                try:
                    example = tf.train.Example.FromString(record)
                    features = example.features.feature
                    encoded = features["image/encoded"].bytes_list.value[0]
                    label = int(features["image/class/label"].int64_list.value[0])
                except (KeyError, IndexError, ValueError) as error:
                    raise InsideError(
                        f"record {source} lacks slim features image/encoded and image/class/label ({error}); "
                        "write it with slim's dataset_utils.image_to_tfexample"
                    ) from None
                yield source, label, (lambda encoded=encoded, source=source: decode_image_bytes(
                    encoded, source, **for_spec(spec)))
        except tf.errors.DataLossError as error:
            raise InsideError(f"TFRecord file {path} is corrupt or truncated ({error.message}); regenerate it") from None


def _read_tfrecords(root: str, files: list[str], spec: PreprocessSpec, collector: _Collector):
    def is_validation(path: str) -> bool:
        name = os.path.basename(path).lower()
        return any(token in name for token in ("validation", "_val", "_test", "val_", "test_"))

    val_files = [path for path in files if is_validation(path)]
    train_files = [path for path in files if path not in val_files]
    if not train_files:
        raise InsideError(f"no training TFRecords in {root} (found only {[os.path.basename(p) for p in val_files]}); "
                          "name them like slim does: <name>_train_00000-of-00005.tfrecord")
    train = _make_split(*collector.collect(_tfrecord_examples(train_files, spec)), spec)
    val = _make_split(*collector.collect(_tfrecord_examples(val_files, spec)), spec) if val_files else None
    labels_path = os.path.join(root, LABELS_FILE)
    max_label = int(max(train.labels.max(initial=-1), val.labels.max(initial=-1) if val is not None else -1))
    if os.path.exists(labels_path):
        names = read_labels_file(labels_path)
        if max_label >= len(names):
            raise InsideError(f"TFRecords use label {max_label} but {labels_path} names only {len(names)} classes; fix labels.txt")
    else:
        names = [str(index) for index in range(max_label + 1)]
    _require_classes(names, root)
    return tuple(names), train, val, "tfrecord", "validation-tfrecords" if val is not None else "none"


def _holdout(train: Split, num_classes: int, seed: int) -> tuple[Split, Split]:
    """Stratified deterministic holdout when the dataset has no validation split."""
    rng = np.random.RandomState(seed)
    val_mask = np.zeros(len(train), dtype=bool)
    for label in range(num_classes):
        members = np.flatnonzero(train.labels == label)
        if len(members) >= 2:
            chosen = rng.permutation(members)[: max(1, int(round(len(members) * HOLDOUT_FRACTION)))]
            val_mask[chosen] = True
    def subset(mask: np.ndarray) -> Split:
        return Split(train.images[mask], train.labels[mask], tuple(s for s, keep in zip(train.sources, mask) if keep))
    return subset(~val_mask), subset(val_mask)


def _apply_offset(split: Split | None, offset: int, where: str) -> Split | None:
    if split is None or offset == 0:
        return split
    shifted = split.labels - offset
    if len(shifted) and shifted.min() < 0:
        bad = split.sources[int(np.argmin(shifted))]
        raise InsideError(f"--labels-offset {offset} makes the label of {bad} ({where}) negative; lower the offset")
    return Split(split.images, shifted, split.sources)


def load_dataset(root: str, spec: PreprocessSpec, on_bad_image: str = "fail", labels_offset: int = 0, seed: int = 0) -> Dataset:
    if on_bad_image not in ON_BAD_IMAGE_CHOICES:
        raise InsideError(f"--on-bad-image {on_bad_image!r}: choose one of {', '.join(ON_BAD_IMAGE_CHOICES)}")
    if not os.path.exists(root):
        raise InsideError(f"dataset directory not found: {root}; pass --data pointing at a folder of class subfolders")
    collector = _Collector(spec, on_bad_image)
    records = _tfrecord_files(root) if os.path.isdir(root) else []
    if records:
        names, train, val, layout, val_source = _read_tfrecords(root, records, spec, collector)
    else:
        names, train, val, layout, val_source = _read_folders(root, spec, collector)
    if len(train) == 0:
        raise InsideError(f"no usable training images in {root} (all {len(collector.skipped)} were bad); fix the dataset")
    present = sorted(set(train.labels.tolist()))
    if len(present) < 2:
        raise InsideError(f"training data in {root} covers only class {[names[i] for i in present]}; add images of other classes")
    if val is None or len(val) == 0:
        train, val = _holdout(train, len(names), seed)
        val_source = f"holdout-{HOLDOUT_FRACTION:g}-of-train"
    if labels_offset < 0 or labels_offset >= len(names) - 1:
        raise InsideError(f"--labels-offset {labels_offset} must be between 0 and {len(names) - 2} for {len(names)} classes")
    train = _apply_offset(train, labels_offset, "train")
    val = _apply_offset(val, labels_offset, "validation")
    return Dataset(
        class_names=tuple(names[labels_offset:]), train=train, val=val, layout=layout,
        val_source=val_source, skipped=tuple(collector.skipped),
    )
