"""Static check of a frozen GraphDef against THIS TensorFlow runtime, without importing it.

Importing a graph with an unknown op or attribute fails with an error that names one node at a
time; reading the protobuf ourselves lets us list every problem at once, with a fix for each.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from typing import Sequence

from .common import InsideError, log, quiet_tensorflow_logs, run_main

ERROR = "error"
WARNING = "warning"
# Ops that only make sense with live variables or optimisers: their presence means the graph
# was not frozen (or was frozen from the training graph).
TRAINING_OPS = {
    "VariableV2", "Variable", "VarHandleOp", "ReadVariableOp", "Assign", "AssignAdd", "AssignSub",
    "AssignVariableOp", "AssignAddVariableOp", "AssignSubVariableOp", "VarIsInitializedOp",
    "IsVariableInitialized", "SaveV2", "RestoreV2", "MergeV2Checkpoints",
}
BATCH_NORM_OPS = {"FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3"}
REF_TYPE_OFFSET = 100  # DataType enum: DT_FLOAT_REF == DT_FLOAT + 100


@dataclass(frozen=True)
class Finding:
    code: str
    node: str
    op: str
    cause: str
    fix: str
    severity: str = ERROR


def read_graph_def(path: str):
    from .manifest import read_model_bytes

    return parse_graph_def(read_model_bytes(path, "point --model at a frozen model.pb"), path)


def parse_graph_def(data: bytes, path: str):
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(data)
    except (DecodeError, RuntimeWarning, ValueError) as error:
        raise InsideError(f"{path} is not a valid frozen GraphDef ({error}); the file is corrupt or truncated - "
                          "copy it again or re-run freeze") from None
    if not graph_def.node:
        raise InsideError(f"{path} parses as an empty GraphDef (no nodes); the file is corrupt or not a frozen model - re-run freeze")
    return graph_def


def _available_device_types() -> set[str]:
    import tensorflow as tf

    return {device.device_type.upper() for device in tf.config.list_physical_devices()}


def _device_finding(node, available: set[str], allow_soft_placement: bool) -> Finding | None:
    device = node.device
    if not device:
        return None
    lowered = device.lower()
    wanted = None
    for kind in ("gpu", "tpu", "cpu"):
        if f"device:{kind}" in lowered or f"/{kind}:" in lowered:
            wanted = kind.upper()
    if wanted is not None and wanted not in available:
        return Finding(
            code="device-unavailable", node=node.name, op=node.op,
            cause=f"node is pinned to {device} but this host has no {wanted}",
            fix="re-freeze without --keep-devices (clears device strings) or run with allow_soft_placement",
            severity=WARNING if allow_soft_placement else ERROR,
        )
    if "/job:" in lowered or "/task:" in lowered or "/replica:" in lowered:
        return Finding(
            code="device-cluster", node=node.name, op=node.op,
            cause=f"node is pinned to a distributed device {device}",
            fix="re-freeze without --keep-devices so the graph is not tied to a cluster",
            severity=WARNING if allow_soft_placement else ERROR,
        )
    return None


def _node_findings(node, known_functions: set[str], available: set[str], allow_soft_placement: bool) -> list[Finding]:
    from tensorflow.python.framework import op_def_registry

    findings = []
    if node.op in known_functions:
        return findings
    op_def = op_def_registry.get(node.op)
    if op_def is None:
        findings.append(Finding(
            code="unregistered-op", node=node.name, op=node.op,
            cause=f"op {node.op} is not registered in this TensorFlow; it is a custom op or comes from a newer TF",
            fix="ship the op's shared library and load it with tf.load_op_library() before importing, "
                "or re-freeze with the same TF version as this runtime",
        ))
    else:
        allowed = {attr.name for attr in op_def.attr}
        unknown = sorted(name for name in node.attr if name not in allowed and not name.startswith("_"))
        if unknown:
            findings.append(Finding(
                code="unknown-attr", node=node.name, op=node.op,
                cause=f"attributes {unknown} are not in this TF's OpDef for {node.op} (graph made by a newer TF)",
                fix="in the environment that froze it, re-export with default-valued attributes stripped "
                    "(python -m incontainer.reexport --strip-default-attrs; works when these attributes hold their "
                    "defaults), or freeze with this runtime's TensorFlow version",
            ))
        if node.op in TRAINING_OPS:
            findings.append(Finding(
                code="training-op", node=node.name, op=node.op,
                cause=f"{node.op} needs live variables; the graph was not frozen",
                fix="freeze with convert_variables_to_constants (python -m incontainer.freeze)",
            ))
        elif any(arg.is_ref for arg in list(op_def.input_arg) + list(op_def.output_arg)):
            findings.append(Finding(
                code="ref-dtype", node=node.name, op=node.op,
                cause=f"{node.op} takes or returns a reference-typed tensor (a live variable)",
                fix="freeze the variables to constants before export",
            ))
        if node.op in BATCH_NORM_OPS and "is_training" in node.attr and node.attr["is_training"].b:
            findings.append(Finding(
                code="batch-norm-training-mode", node=node.name, op=node.op,
                cause="batch norm uses batch statistics (is_training=True): the graph was frozen in training mode",
                fix="rebuild the network with is_training=False before freezing",
            ))
    for name, value in node.attr.items():
        types = [value.type] if value.HasField("type") else list(value.list.type)
        if any(dtype >= REF_TYPE_OFFSET for dtype in types):
            findings.append(Finding(
                code="ref-dtype", node=node.name, op=node.op,
                cause=f"attribute {name} has a reference dtype (variable reference left in the graph)",
                fix="freeze the variables to constants before export",
            ))
            break
    device = _device_finding(node, available, allow_soft_placement)
    if device is not None:
        findings.append(device)
    return findings


def check_graph_def(graph_def, allow_soft_placement: bool = False) -> list[Finding]:
    import tensorflow as tf

    findings: list[Finding] = []
    versions = graph_def.versions
    runtime = tf.version.GRAPH_DEF_VERSION
    runtime_min_consumer = tf.version.GRAPH_DEF_VERSION_MIN_CONSUMER
    runtime_min_producer = getattr(tf.version, "GRAPH_DEF_VERSION_MIN_PRODUCER", 0)
    if versions.min_consumer > runtime:
        findings.append(Finding(
            code="graph-too-new", node="", op="",
            cause=f"graph requires consumer version >= {versions.min_consumer}; this TF {tf.__version__} is {runtime}",
            fix="run inference with a TF at least as new as the one that froze the graph, or re-freeze with this TF",
        ))
    if versions.producer and versions.producer < runtime_min_producer:
        findings.append(Finding(
            code="graph-too-old", node="", op="",
            cause=f"graph producer {versions.producer} is older than this TF supports ({runtime_min_producer})",
            fix="re-freeze the model with a newer TensorFlow",
        ))
    if runtime in list(versions.bad_consumers):
        findings.append(Finding(
            code="bad-consumer", node="", op="",
            cause=f"graph lists this TF's version {runtime} among bad_consumers",
            fix="use a different TensorFlow version for inference",
        ))
    if versions.producer > runtime:
        findings.append(Finding(
            code="newer-producer", node="", op="",
            cause=f"graph produced by GraphDef version {versions.producer}, newer than this TF's {runtime} "
                  f"(min consumer {runtime_min_consumer})",
            fix="fine if no op/attr findings follow; otherwise freeze with this TF or strip default attrs",
            severity=WARNING,
        ))
    known_functions = {function.signature.name for function in graph_def.library.function}
    available = _available_device_types()
    for node in graph_def.node:
        findings.extend(_node_findings(node, known_functions, available, allow_soft_placement))
    for function in graph_def.library.function:
        for node in function.node_def:
            for finding in _node_findings(node, known_functions, available, allow_soft_placement):
                findings.append(Finding(finding.code, f"{function.signature.name}/{finding.node}", finding.op,
                                        finding.cause, finding.fix, finding.severity))
    return findings


def blocking(findings: Sequence[Finding]) -> list[Finding]:
    return [finding for finding in findings if finding.severity == ERROR]


def preflight_file(path: str, allow_soft_placement: bool = False) -> list[Finding]:
    return check_graph_def(read_graph_def(path), allow_soft_placement)


def summarize(findings: Sequence[Finding], limit: int = 5) -> str:
    parts = [f"{f.code} at {f.node or '<graph>'} ({f.op or '-'}): {f.cause}; fix: {f.fix}" for f in findings[:limit]]
    more = f" ... and {len(findings) - limit} more" if len(findings) > limit else ""
    return " | ".join(parts) + more


def main(argv: Sequence[str] | None = None) -> int | None:
    quiet_tensorflow_logs()
    parser = argparse.ArgumentParser(prog="python -m incontainer.preflight", description=__doc__)
    parser.add_argument("--model", required=True, help="frozen model.pb (or the model directory holding it)")
    parser.add_argument("--allow-soft-placement", action="store_true", help="treat unavailable device pins as warnings")
    args = parser.parse_args(argv)
    path = args.model
    import os

    if os.path.isdir(path):
        path = os.path.join(path, "model.pb")
    findings = preflight_file(path, args.allow_soft_placement)
    print(json.dumps([asdict(finding) for finding in findings], indent=2, sort_keys=True))
    errors = blocking(findings)
    if errors:
        log(f"preflight: {len(errors)} blocking finding(s) for {path}")
        return 3
    log(f"preflight: {path} can run on this TensorFlow ({len(findings)} warning(s))")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
