"""The frozen graph in ONNX Runtime (converted with tf2onnx) and OpenVINO (read by its TensorFlow
frontend), each as a golden-check Runner. The caller declares the precision; the runtime's own
answer about what it computed in is what gets recorded."""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Sequence

import numpy as np

from ..common import InsideError, atomic_write_bytes, log
from ..contract import (PRECISION_BF16, PRECISION_FP32, PRECISION_INT8, PRECISION_RUNTIME_DEFAULT,
                        RUNTIME_ONNXRUNTIME, RUNTIME_OPENVINO, Code)

ONNX_OPSET = 17
ONNX_FILE = "model.onnx"
OPENVINO_FILES = ("model.xml", "model.bin")
# OpenVINO's names for the element types its INFERENCE_PRECISION_HINT reports.
OPENVINO_PRECISIONS = {"f32": PRECISION_FP32, "float32": PRECISION_FP32, "bf16": PRECISION_BF16,
                       "bfloat16": PRECISION_BF16, "f16": "fp16", "float16": "fp16"}
# int8: the quantized layers run in int8 whatever the hint; the rest stays fp32 (not bf16 on AMX).
OPENVINO_HINTS = {PRECISION_FP32: "f32", PRECISION_BF16: "bf16", PRECISION_INT8: "f32"}
# What ONNX Runtime's CPU provider runs in integers once it has fused the QDQ pairs.
ONNX_INTEGER_OPS = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm", "QLinearAdd",
                    "QLinearGlobalAveragePool")


class ConversionFailed(InsideError):
    """The converter rejected the graph; the message names the op or construct and the converter."""

    def __init__(self, message: str):
        super().__init__(message, code=Code.CONVERSION_FAILED)


Runner = Callable[[np.ndarray], Dict[str, np.ndarray]]  # batch -> {golden key: array}


@dataclass
class Backend:
    runtime: str
    run: Runner  # every golden tensor, the blocks included
    # keys -> a Runner computing only those: what predictions need. The golden check's block outputs
    # cost a bf16 OpenVINO model a reorder and an fp32 copy per block on every batch.
    outputs_only: Callable[[Sequence[str]], Runner]
    precision_declared: str
    precision_effective: str
    versions: Dict[str, str]
    details: Dict[str, object] = field(default_factory=dict)

    def describe(self) -> dict:
        return {"name": self.runtime, "precision_declared": self.precision_declared,
                "precision_effective": self.precision_effective, "versions": self.versions, **self.details}


def versions(runtime: str) -> Dict[str, str]:
    if runtime == RUNTIME_ONNXRUNTIME:
        import onnx
        import onnxruntime
        import tf2onnx

        return {"tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    import openvino

    return {"openvino": openvino.get_version()}


def unsupported_ops(text: str) -> list:
    """Op names a converter's message lists as unsupported (tf2onnx's Counter({'Op': n}), ONNX's checker,
    TensorFlow's importer inside tf2onnx, OpenVINO's "No conversion rule found for operations")."""
    found = re.findall(r"'([A-Z][A-Za-z0-9_]*)': \d+", text)
    found += re.findall(r"No Op registered for ([A-Z][A-Za-z0-9_]*)", text)
    found += re.findall(r"Op type not registered '([A-Za-z0-9_]+)'", text)
    rules = re.search(r"No conversion rule found for operations: ([A-Za-z0-9_]+(?:, [A-Za-z0-9_]+)*)", text)
    if rules:
        found += rules.group(1).split(", ")
    return sorted(set(found))


def conversion_message(runtime: str, source: str, error: BaseException, converter: Dict[str, str]) -> str:
    text = " ".join(str(error).split())
    ops = unsupported_ops(text)
    what = f"unsupported op{'s' if len(ops) > 1 else ''} {', '.join(ops)}" if ops else text[:400]
    tool = ", ".join(f"{name} {version}" for name, version in sorted(converter.items()))
    fix = ("the converter has no rule for it: serve this graph with --runtime tensorflow (loading the op's "
           "library), or replace the op in TensorFlow and freeze again") if ops else \
        "coldchain doctor names what TensorFlow itself thinks of the graph; or infer with --runtime tensorflow"
    return f"{source}: converting the graph for {runtime} failed ({tool}): {what}; {fix}"


# --- ONNX Runtime ---------------------------------------------------------------------------------
def convert_onnx(graph_def, input_tensor: str, tensors: Dict[str, str], source: str) -> bytes:
    """tf2onnx from the GraphDef in memory; the golden tensors (blocks included) become graph outputs,
    keeping their TensorFlow names."""
    import onnx
    import tf2onnx

    try:
        model_proto, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=[input_tensor],
                                                        output_names=list(dict.fromkeys(tensors.values())),
                                                        opset=ONNX_OPSET)
        # tf2onnx only logs the ops it cannot convert and leaves them in; ONNX's checker refuses them.
        onnx.checker.check_model(model_proto)
    except Exception as error:  # tf2onnx raises bare Exceptions and ValueErrors alike
        raise ConversionFailed(conversion_message(RUNTIME_ONNXRUNTIME, source, error,
                                                  versions(RUNTIME_ONNXRUNTIME))) from None
    return model_proto.SerializeToString()


def convert_onnx_kept(graph_def, input_tensor: str, tensors: Dict[str, str], source: str,
                      cache_dir: Optional[str]) -> tuple:
    """convert_onnx, kept in `cache_dir` under a digest of everything the conversion depends on (the
    graph's bytes, inputs and outputs, opset, tf2onnx/onnx versions, the source named in messages):
    the drift test converts the same graph in the same image on every run, 10 s each. A failure is
    kept too, with its message. Returns the model and "kept" or "converted"."""
    if not cache_dir:
        return convert_onnx(graph_def, input_tensor, tensors, source), "converted"
    key = hashlib.sha256(graph_def.SerializeToString(deterministic=True) + json.dumps(
        [input_tensor, sorted(tensors.items()), ONNX_OPSET, versions(RUNTIME_ONNXRUNTIME), source]).encode()).hexdigest()
    converted, failed = os.path.join(cache_dir, f"{key}.onnx"), os.path.join(cache_dir, f"{key}.failed.txt")
    if os.path.isfile(failed):
        with open(failed) as handle:
            raise ConversionFailed(handle.read())
    if os.path.isfile(converted):
        with open(converted, "rb") as handle:
            return handle.read(), "kept"
    try:
        model = convert_onnx(graph_def, input_tensor, tensors, source)
    except ConversionFailed as failure:
        _keep(failed, str(failure).encode())
        raise
    _keep(converted, model)
    return model, "converted"


def _keep(path: str, data: bytes) -> None:
    try:
        atomic_write_bytes(path, data)
    except (OSError, InsideError) as error:  # a cache that cannot be written only costs time
        log(f"probe: not kept: {path}: {error}")


def onnxruntime_backend(model: bytes, input_tensor: str, tensors: Dict[str, str], precision: str,
                        intra_op_threads: int = 0, inter_op_threads: int = 0) -> Backend:
    import onnxruntime

    if precision == PRECISION_BF16:
        raise InsideError("ONNX Runtime's CPU provider computes this graph in fp32 only; declare --precision fp32, "
                          "or use --runtime openvino for bf16")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    effective, details = PRECISION_FP32, {}
    if precision == PRECISION_INT8:
        session, details["optimized_ops"] = onnx_session_read_back(model, options)
        effective = PRECISION_INT8 if any(details["optimized_ops"].get(op) for op in ONNX_INTEGER_OPS) else PRECISION_FP32
    else:
        session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    keys = list(tensors)

    def fetching(keys: Sequence[str]) -> Runner:
        names = [tensors[key] for key in keys]

        def run(batch: np.ndarray) -> Dict[str, np.ndarray]:
            return dict(zip(keys, session.run(names, {input_tensor: batch.astype(np.float32, copy=False)})))
        return run
    return Backend(RUNTIME_ONNXRUNTIME, fetching(keys), fetching, precision, effective,
                   versions(RUNTIME_ONNXRUNTIME), {"providers": session.get_providers(), "opset": ONNX_OPSET, **details})


def onnx_session_read_back(model: bytes, options) -> tuple:
    """The session, and the op types of the graph it runs: ONNX Runtime writes its optimized graph
    (QDQ pairs fused into QLinearConv where its kernels compute in integers) where told to."""
    import tempfile

    import onnx
    import onnxruntime

    with tempfile.TemporaryDirectory(prefix="ort-optimized-") as scratch:
        options.optimized_model_filepath = os.path.join(scratch, "optimized.onnx")
        session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        optimized = onnx.load(options.optimized_model_filepath, load_external_data=False)
    counts: Dict[str, int] = {}
    for node in optimized.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return session, dict(sorted(counts.items()))


# --- OpenVINO -------------------------------------------------------------------------------------
def read_openvino(model_path: str, tensors: Dict[str, str], source: str):
    """OpenVINO's TensorFlow frontend on the frozen .pb, or an IR it saved. The golden tensors are made
    outputs before conversion: its transformations (batch-norm fusion, layout) drop the block tensors'
    names, so they cannot be added afterwards."""
    import openvino

    try:
        if not model_path.endswith(".pb"):
            return openvino.Core().read_model(model_path)
        from openvino.frontend import FrontEndManager

        frontend = FrontEndManager().load_by_framework("tf")
        model = frontend.load(model_path)
        model.override_all_outputs([model.get_place_by_tensor_name(name) for name in dict.fromkeys(tensors.values())])
        return frontend.convert(model)
    except Exception as error:  # OpenVINO raises its own exception types from C++
        raise ConversionFailed(conversion_message(RUNTIME_OPENVINO, source, error, versions(RUNTIME_OPENVINO))) \
            from None


def openvino_backend(model, tensors: Dict[str, str], precision: str, intra_op_threads: int = 0) -> Backend:
    import openvino

    config = {}
    if precision != PRECISION_RUNTIME_DEFAULT:
        config["INFERENCE_PRECISION_HINT"] = OPENVINO_HINTS[precision]
    if intra_op_threads:
        config["INFERENCE_NUM_THREADS"] = intra_op_threads
    core = openvino.Core()
    compiled = core.compile_model(model, "CPU", config)
    hint = str(compiled.get_property("INFERENCE_PRECISION_HINT"))  # e.g. "<Type: 'bfloat16'>"
    named = re.findall(r"[a-z]+[0-9]+", hint.lower())
    effective = OPENVINO_PRECISIONS.get(named[-1] if named else hint, hint)
    details = {}
    if precision == PRECISION_INT8:
        details["layer_precisions"] = openvino_layer_precisions(compiled)
        effective = PRECISION_INT8 if any(kind in ("i8", "u8") for kind in details["layer_precisions"]) else effective

    def runner(compiled_model, keys: Sequence[str]) -> Runner:
        ports = {key: compiled_model.output(tensors[key]) for key in keys}
        request = compiled_model.create_infer_request()

        def run(batch: np.ndarray) -> Dict[str, np.ndarray]:
            results = request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
            return {key: np.array(results[port]) for key, port in ports.items()}
        return run

    def outputs_only(keys: Sequence[str]) -> Runner:
        # Compiled again with only these results, at the same settings; the caller golden-checks it too.
        alone = openvino.Model([model.output(tensors[key]) for key in keys], model.get_parameters(), "outputs")
        return runner(core.compile_model(alone, "CPU", config), keys)
    return Backend(RUNTIME_OPENVINO, runner(compiled, list(tensors)), outputs_only, precision, effective,
                   versions(RUNTIME_OPENVINO),
                   {"inference_precision_hint": hint, "config": {k: str(v) for k, v in config.items()}, **details})


def openvino_layer_precisions(compiled) -> Dict[str, int]:
    """How many convolutions and matrix products the compiled model runs in each precision: its runtime
    model's layers carry the precision the CPU plugin chose (runtimePrecision: i8/u8 where quantized)."""
    counts: Dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        try:
            layer, kind = (_any_text(info[name]) for name in ("layerType", "runtimePrecision"))
        except (KeyError, RuntimeError, IndexError):
            continue
        if layer in ("convolution", "fullyconnected", "matmul", "groupconvolution"):
            counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))


def _any_text(value) -> str:
    """An OpenVINO rt_info value (OVAny, whose str() is its class) as lower-case text."""
    return str(value.astype(str) if hasattr(value, "astype") else value).strip().lower()

