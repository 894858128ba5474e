"""TensorFlow Lite: the frozen graph converted by TensorFlow's own converter (fp32, fp16 weights,
dynamic-range int8, full int8 calibrated on representative images), and run by LiteRT's interpreter
(ai-edge-litert) as a golden-check Backend, with XNNPACK's state recorded."""
from __future__ import annotations

from typing import Callable, Dict, Iterable, Optional, Sequence

import numpy as np

from ..common import InsideError
from ..contract import (PRECISION_DYNAMIC, PRECISION_FP16, PRECISION_FP32, PRECISION_INT8, RUNTIME_TFLITE,
                        TFLITE_PRECISIONS)
from .backends import Backend, ConversionFailed, Runner, conversion_message

TFLITE_FILE = "model.tflite"


def node_name(tensor: str) -> str:
    """The converter names arrays by node: "probabilities:0" -> "probabilities"."""
    name, _, index = tensor.partition(":")
    if index not in ("", "0"):
        raise InsideError(f"TFLite conversion needs each output at index 0 of its node; {tensor} is not")
    return name


def versions() -> Dict[str, str]:
    import tensorflow as tf

    found = {"tensorflow_converter": tf.__version__}
    try:
        from importlib.metadata import version

        found["ai_edge_litert"] = version("ai-edge-litert")
    except Exception:  # noqa: BLE001 - the converter alone still converts
        found["ai_edge_litert"] = "absent"
    return found


def configure(converter, precision: str, representative: Optional[Callable[[], Iterable]]) -> None:
    """The converter's settings for `precision`; full int8 keeps float input and output."""
    import tensorflow as tf

    if precision not in TFLITE_PRECISIONS:
        raise InsideError(f"no TFLite precision {precision!r}; choose {', '.join(TFLITE_PRECISIONS)}")
    if precision == PRECISION_FP32:
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == PRECISION_FP16:
        converter.target_spec.supported_types = [tf.float16]
    elif precision == PRECISION_INT8:
        if representative is None:
            raise InsideError("full int8 needs representative images: pass --calibration-images DIR")
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    # PRECISION_DYNAMIC: Optimize.DEFAULT alone quantizes the weights to int8.
    assert precision in (PRECISION_FP16, PRECISION_INT8, PRECISION_DYNAMIC)


def convert_tflite(model_path: str, input_tensor: str, outputs: Sequence[str], precision: str,
                   representative: Optional[Callable[[], Iterable]] = None) -> bytes:
    """tf.compat.v1.lite.TFLiteConverter.from_frozen_graph with the manifest's input and output names."""
    import tensorflow as tf

    converter = tf.compat.v1.lite.TFLiteConverter.from_frozen_graph(
        model_path, input_arrays=[node_name(input_tensor)], output_arrays=[node_name(name) for name in outputs])
    configure(converter, precision, representative)
    try:
        return converter.convert()
    except Exception as error:  # the converter raises ConverterError, ValueError, RuntimeError
        raise ConversionFailed(conversion_message(f"{RUNTIME_TFLITE} {precision}", model_path, error, versions())) \
            from None


def interpreter(model: bytes, xnnpack: bool, threads: int):
    """LiteRT's interpreter; without XNNPACK, the builtin kernels alone (no default delegates)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    return Interpreter(model_content=model, num_threads=threads or None, experimental_op_resolver_type=resolver), \
        resolver.name


def tflite_backend(model: bytes, tensors: Dict[str, str], precision: str, xnnpack: bool = True,
                   threads: int = 0) -> Backend:
    """The artefact as a Backend: {golden key: array} per batch, the input resized to the batch."""
    engine, resolver = interpreter(model, xnnpack, threads)
    (entry,) = engine.get_input_details()
    outputs = engine.get_output_details()
    by_name = {detail["name"]: detail["index"] for detail in outputs}
    wanted = list(dict.fromkeys(tensors.values()))
    # The converter keeps the output arrays' order; names are checked first where it kept them.
    index_of = {name: by_name.get(node_name(name), by_name.get(name, outputs[i]["index"] if i < len(outputs) else None))
                for i, name in enumerate(wanted)}
    shape = [None]

    def fetching(keys: Sequence[str]) -> Runner:
        def run(batch: np.ndarray) -> Dict[str, np.ndarray]:
            batch = np.ascontiguousarray(batch, dtype=np.float32)
            if shape[0] != batch.shape:
                engine.resize_tensor_input(entry["index"], list(batch.shape))
                engine.allocate_tensors()
                shape[0] = batch.shape
            engine.set_tensor(entry["index"], batch)
            engine.invoke()
            return {key: np.array(engine.get_tensor(index_of[tensors[key]])) for key in keys}
        return run
    dtypes = tensor_dtypes(engine)
    return Backend(RUNTIME_TFLITE, fetching(list(tensors)), fetching, precision, precision_read_back(precision, dtypes),
                   versions(), {"xnnpack": {"enabled": bool(xnnpack), "op_resolver": resolver},
                                "tensor_dtypes": dtypes})


def tensor_dtypes(engine) -> Dict[str, int]:
    """How many of the interpreter's tensors hold each element type: what the artefact computes in."""
    counts: Dict[str, int] = {}
    try:
        details = engine.get_tensor_details()
    except (RuntimeError, ValueError):  # nothing to read back: the declared precision stands
        return counts
    for detail in details:
        name = np.dtype(detail["dtype"]).name
        counts[name] = counts.get(name, 0) + 1
    return counts


def precision_read_back(declared: str, dtypes: Dict[str, int]) -> str:
    """The precision the artefact's tensors show: int8 tensors for dynamic-range and full int8, float16
    ones for fp16 weights, float32 alone for fp32. The declared one where they agree, else what they show."""
    if not dtypes:
        return declared
    shown = PRECISION_INT8 if dtypes.get("int8") or dtypes.get("uint8") else \
        PRECISION_FP16 if dtypes.get("float16") else PRECISION_FP32
    agrees = shown == declared or (declared == PRECISION_DYNAMIC and shown == PRECISION_INT8)
    return declared if agrees else shown
