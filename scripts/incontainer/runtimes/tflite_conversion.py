"""A TFLite conversion target (tflite-fp32|fp16|dynamic|int8) made and measured: full int8 calibrated on
representative images preprocessed exactly as the manifest says, then the artefact run on the golden
images here so the quantized golden check's bound is the model's own (golden_bound in conversion.json)."""
from __future__ import annotations

import os
import time
from typing import Callable, Iterable, List, Optional, Tuple

import numpy as np

from ..common import InsideError, atomic_write_bytes, log
from ..contract import CALIBRATION_MAX_IMAGES, FLAG_CALIBRATION_IMAGES, PRECISION_INT8, QUANTIZED_PRECISIONS
from ..data.image_files import decode_image_file, for_spec, list_image_files
from ..golden import quantized
from .artefacts import clear, write_record
from .tflite import TFLITE_FILE, convert_tflite, tflite_backend, versions


def precision_of(target: str) -> str:
    return target.split("-", 1)[1]


def calibration_files(directory: str, limit: int = CALIBRATION_MAX_IMAGES) -> List[str]:
    """Up to `limit` image files under `directory`, evenly spaced over its sorted listing (every class
    of a class-per-folder tree is drawn from)."""
    if not os.path.isdir(directory):
        raise InsideError(f"{FLAG_CALIBRATION_IMAGES} {directory} is not a directory; name a folder of images")
    found = list_image_files(directory)
    if not found:
        raise InsideError(f"{directory} holds no image files; full int8 needs representative images "
                          f"({FLAG_CALIBRATION_IMAGES} DIR)")
    if len(found) <= limit:
        return found
    return [found[int(i * len(found) / limit)] for i in range(limit)]


def representative_dataset(spec, files: List[str]) -> Callable[[], Iterable]:
    """The converter's representative dataset: each image decoded and preprocessed as the model expects."""
    def batches():
        for path in files:
            yield [spec.apply(decode_image_file(path, **for_spec(spec)))[None].astype(np.float32)]
    return batches


def golden_probabilities(model, run) -> Tuple[np.ndarray, np.ndarray]:
    """(golden, artefact) probabilities on the golden images, one image at a time."""
    from ..golden.check import in_batches

    inputs = model.arrays[model.manifest["golden"]["input_key"]]
    key = model.output_key
    values = in_batches(lambda batch: {"out": run(batch)[key]}, inputs, 1)["out"]
    return (quantized.as_probabilities(model.arrays[key], model.softmax_needed),
            quantized.as_probabilities(values, model.softmax_needed))


def calibration_for(model, target: str, calibration: Optional[str], on_golden: bool) -> Tuple[Callable, dict]:
    """(representative dataset, its record): the images given, else (on_golden) the golden inputs, which
    are preprocessed already; these are also what the bound is measured on, so the record says so."""
    if calibration:
        files = calibration_files(calibration)
        return representative_dataset(model.spec, files), {"source": "images", "images": len(files),
                                                           "max_images": CALIBRATION_MAX_IMAGES}
    if not on_golden:
        raise InsideError(f"{target} needs representative images: {FLAG_CALIBRATION_IMAGES} DIR (the model's "
                          "training images, preprocessed as its manifest says)")
    inputs = model.arrays[model.manifest["golden"]["input_key"]][:CALIBRATION_MAX_IMAGES]

    def batches():
        for image in inputs:
            yield [np.asarray(image, dtype=np.float32)[None]]
    return batches, {"source": "golden", "images": int(len(inputs)), "max_images": CALIBRATION_MAX_IMAGES}


def convert_target(model_dir: str, target: str, out_dir: str, calibration: Optional[str],
                   on_golden: bool = False, held_out: Optional[str] = None) -> dict:
    """Write out_dir/model.tflite for `target`, measure it on the golden images (and full int8 on the
    held-out images, where given), then conversion.json (the record, returned)."""
    from ..golden.session import ModelSession
    from ..graph.model_files import ModelLoader

    precision = precision_of(target)
    model = ModelSession(ModelLoader.for_model(model_dir).files().require())
    clear(out_dir)
    start = time.perf_counter()
    representative, extra = None, {"precision": precision}
    if precision == PRECISION_INT8:
        representative, extra["calibration"] = calibration_for(model, target, calibration, on_golden)
    data = convert_tflite(model.files.verified_path, model.input_tensor,
                          list(dict.fromkeys(model.tensors.values())), precision, representative)
    atomic_write_bytes(os.path.join(out_dir, TFLITE_FILE), data)
    backend = tflite_backend(data, model.tensors, precision)
    reference, actual = golden_probabilities(model, backend.run)
    measured = quantized.measure(reference, actual)
    extra["golden_measured"] = {key: measured[key] for key in ("max_prob_error", "top1_agreement", "images")}
    if precision in QUANTIZED_PRECISIONS:
        extra["golden_bound"] = quantized.bound_from_measurement(measured, precision)
    if held_out and precision == PRECISION_INT8:
        from ..golden.held_out import held_out_agreement

        key = model.output_key
        extra["held_out"] = held_out_agreement(model, backend.outputs_only([key]), key, held_out)
        log(f"convert: {target}: top-1 agreement {extra['held_out']['agreement']:.3f} on "
            f"{extra['held_out']['images']} held-out images")
    log(f"convert: {target}: probability error {measured['max_prob_error']:.3g}, top-1 agreement "
        f"{measured['top1_agreement']:.3f} on {measured['images']} golden images")
    return write_record(out_dir, model.manifest, target, [TFLITE_FILE], versions(), time.perf_counter() - start,
                        extra)
