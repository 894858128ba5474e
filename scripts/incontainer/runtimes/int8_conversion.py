"""OpenVINO int8 (NNCF post-training quantization) and ONNX Runtime static int8 (QDQ) made and measured,
from the same calibration images as TFLite's full int8 (tflite_conversion.calibration_for). Both are
quantized so that no CPU's int8 kernels saturate: x86's u8*s8 multiply-add without VNNI (AVX2,
AVX-512F) sums pairs into int16, which 8-bit weights can overflow; 7-bit weights cannot (ONNX Runtime's
reduce_range, NNCF's overflow fix on every layer), so VNNI, AMX and AVX2 machines compute the same
integers. The artefact is then run here on the golden images (the model's bound, golden_bound) and on
held-out images where given (top-1 agreement with TensorFlow fp32), all recorded in conversion.json."""
from __future__ import annotations

import os
import tempfile
import time
from typing import List, Optional

import numpy as np

from ..common import InsideError, atomic_write_bytes, log
from ..contract import PRECISION_INT8, RUNTIME_ONNXRUNTIME, RUNTIME_OPENVINO, int8_target
from ..golden import quantized
from .artefacts import clear, write_record
from .backends import (ONNX_FILE, OPENVINO_FILES, ConversionFailed, conversion_message, convert_onnx,
                       onnxruntime_backend, openvino_backend, read_openvino, versions)
from .tflite_conversion import calibration_for, golden_probabilities

# ONNX Runtime: u8 activations, s8 weights per output channel in 7 bits (reduce_range), QDQ nodes that
# its CPU provider fuses into QLinearConv. Min-max ranges over every calibration image in one pass: the
# calibrator keeps only each tensor's ReduceMin/ReduceMax per image, so memory is small, and its
# CalibMaxIntermediateOutputs chunking is not used: this ORT's collect_data drops each full chunk
# unreduced (only the last count % chunk images counted) and raises "No data is collected" when the
# count is a multiple of the chunk (an adopted model's 16 golden inputs against a chunk of 8).
ORT_SETTINGS = {"quant_format": "QDQ", "activation_type": "QUInt8", "weight_type": "QInt8", "per_channel": True,
                "reduce_range": True, "calibrate_method": "MinMax", "moving_average": True}
# NNCF: symmetric weights and activations (PERFORMANCE), the 7-bit overflow fix on every layer.
NNCF_SETTINGS = {"preset": "PERFORMANCE", "overflow_fix": "ENABLE", "fast_bias_correction": True}


def runtime_of(target: str) -> str:
    return target[:-len(PRECISION_INT8) - 1]


def quantize_onnx(model, samples: List[np.ndarray], out_dir: str) -> List[str]:
    """tf2onnx's fp32 model, then onnxruntime.quantization.quantize_static on the samples."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter({model.input_tensor: sample} for sample in samples)

        def get_next(self):
            return next(self.items, None)

    source = model.files.verified_path
    fp32 = convert_onnx(model.graph_def, model.input_tensor, model.tensors, source)
    with tempfile.TemporaryDirectory(prefix="onnx-int8-") as scratch:
        float_path, int8_path = os.path.join(scratch, "fp32.onnx"), os.path.join(scratch, ONNX_FILE)
        with open(float_path, "wb") as handle:
            handle.write(fp32)
        try:
            quantize_static(float_path, int8_path, Reader(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            per_channel=ORT_SETTINGS["per_channel"], reduce_range=ORT_SETTINGS["reduce_range"],
                            calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"CalibMovingAverage": ORT_SETTINGS["moving_average"]})
        except Exception as error:  # the quantizer raises bare Exceptions, ValueErrors and ORT's own
            raise ConversionFailed(conversion_message(int8_target(RUNTIME_ONNXRUNTIME), source, error,
                                                      versions(RUNTIME_ONNXRUNTIME))) from None
        with open(int8_path, "rb") as handle:
            atomic_write_bytes(os.path.join(out_dir, ONNX_FILE), handle.read())
    return [ONNX_FILE]


def quantize_openvino(model, samples: List[np.ndarray], out_dir: str) -> List[str]:
    """OpenVINO's TensorFlow frontend, then nncf.quantize on the samples; saved as IR (weights kept int8)."""
    import nncf
    import openvino

    source = model.files.verified_path
    float_model = read_openvino(source, model.tensors, source)
    try:
        int8 = nncf.quantize(float_model, nncf.Dataset(samples), subset_size=len(samples),
                             preset=nncf.QuantizationPreset.PERFORMANCE, fast_bias_correction=True,
                             advanced_parameters=nncf.AdvancedQuantizationParameters(
                                 overflow_fix=nncf.OverflowFix.ENABLE))
    except Exception as error:  # NNCF raises its own and OpenVINO's exception types
        raise ConversionFailed(conversion_message(int8_target(RUNTIME_OPENVINO), source, error,
                                                  int8_versions(RUNTIME_OPENVINO))) from None
    openvino.save_model(int8, os.path.join(out_dir, OPENVINO_FILES[0]), compress_to_fp16=False)
    return list(OPENVINO_FILES)


def int8_versions(runtime: str) -> dict:
    found = versions(runtime)
    if runtime == RUNTIME_OPENVINO:
        import nncf

        found["nncf"] = nncf.__version__
    return found


def open_artefact(model, runtime: str, out_dir: str):
    """The artefact just written, opened as infer opens it (a Backend reporting its effective precision)."""
    intra, inter = model.threads
    if runtime == RUNTIME_ONNXRUNTIME:
        with open(os.path.join(out_dir, ONNX_FILE), "rb") as handle:
            return onnxruntime_backend(handle.read(), model.input_tensor, model.tensors, PRECISION_INT8, intra, inter)
    return openvino_backend(read_openvino(os.path.join(out_dir, OPENVINO_FILES[0]), model.tensors, out_dir),
                            model.tensors, PRECISION_INT8, intra)


def measured_on(model, backend, held_out: Optional[str]) -> dict:
    """The conversion's measurement: the golden images (the bound) and, where given, held-out images."""
    reference, actual = golden_probabilities(model, backend.run)
    measured = quantized.measure(reference, actual)
    found = {"golden_measured": {key: measured[key] for key in ("max_prob_error", "top1_agreement", "images")},
             "golden_bound": quantized.bound_from_measurement(measured, PRECISION_INT8),
             "precision_effective": backend.precision_effective,
             "runtime": {key: value for key, value in backend.describe().items() if key != "versions"}}
    if held_out:
        from ..golden.held_out import held_out_agreement

        key = model.output_key
        found["held_out"] = held_out_agreement(model, backend.outputs_only([key]), key, held_out)
    return found


def convert_int8(model_dir: str, target: str, out_dir: str, calibration: Optional[str], on_golden: bool = False,
                 held_out: Optional[str] = None) -> dict:
    """Write out_dir's int8 artefact for `target` (openvino-int8, onnxruntime-int8), measure it, then
    conversion.json (the record, returned)."""
    from ..golden.session import ModelSession
    from ..graph.model_files import ModelLoader

    runtime = runtime_of(target)
    if runtime not in (RUNTIME_ONNXRUNTIME, RUNTIME_OPENVINO):
        raise InsideError(f"no int8 converter for {target!r}")
    model = ModelSession(ModelLoader.for_model(model_dir).files().require())
    clear(out_dir)
    start = time.perf_counter()
    batches, calibrated = calibration_for(model, target, calibration, on_golden)
    samples = [np.ascontiguousarray(batch[0], dtype=np.float32) for batch in batches()]
    quantize = quantize_onnx if runtime == RUNTIME_ONNXRUNTIME else quantize_openvino
    written = quantize(model, samples, out_dir)
    quantized_s = time.perf_counter() - start
    measured = measured_on(model, open_artefact(model, runtime, out_dir), held_out)
    settings = ORT_SETTINGS if runtime == RUNTIME_ONNXRUNTIME else NNCF_SETTINGS
    golden = measured["golden_measured"]
    log(f"convert: {target}: quantized in {quantized_s:.1f} s; probability error {golden['max_prob_error']:.3g}, "
        f"top-1 agreement {golden['top1_agreement']:.3f} on {golden['images']} golden images"
        + (f", {measured['held_out']['agreement']:.3f} on {measured['held_out']['images']} held-out images"
           if "held_out" in measured else "") + f"; computes in {measured['precision_effective']}")
    return write_record(out_dir, model.manifest, target, written, int8_versions(runtime), time.perf_counter() - start,
                        {"precision": PRECISION_INT8, "calibration": calibrated, "quantization": settings,
                         "quantization_s": round(quantized_s, 3), **measured})
