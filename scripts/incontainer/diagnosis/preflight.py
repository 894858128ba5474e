"""Static checks of a frozen GraphDef against THIS TensorFlow, before anything is imported or run.

Reading the protobuf ourselves lists every problem at once, with the cause and the fix, where the
importer would stop at the first node. These findings are hypotheses: the doctor's import and run
stages confirm or refute them with the runtime itself.
"""
from __future__ import annotations

import re
from dataclasses import replace
from typing import List, Optional, Set

from ..contract import Code
from .findings import ERROR, WARNING, Finding

# Ops that only make sense with live variables or optimisers. A saver's SaveV2/RestoreV2 are the
# dangerous-op finding (opscan.py: they write and read files), one finding per node; its variables are here.
TRAINING_OPS = {
    "VariableV2", "Variable", "VarHandleOp", "ReadVariableOp", "Assign", "AssignAdd", "AssignSub",
    "AssignVariableOp", "AssignAddVariableOp", "AssignSubVariableOp", "VarIsInitializedOp",
    "IsVariableInitialized",
}
BATCH_NORM_OPS = {"FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3"}
REF_TYPE_OFFSET = 100  # DataType enum: DT_FLOAT_REF == DT_FLOAT + 100
CLEAR_DEVICES = ("clear the device fields: coldchain reexport MODEL --clear-devices --out NEW_DIR (in a container "
                 "with TensorFlow: python -m incontainer.steps.reexport --model MODEL --clear-devices --out NEW_DIR); "
                 "the computation and its golden outputs stay the same")
_DEVICE = re.compile(r"/job:(?P<job>[^/]+)|/replica:(?P<replica>\d+)|/task:(?P<task>\d+)|"
                     r"/(?:device:)?(?P<type>[A-Za-z_]+):(?P<index>\d+|\*)", re.IGNORECASE)


def parse_device(device: str) -> dict:
    parts: dict = {}
    for match in _DEVICE.finditer(device):
        for key, value in match.groupdict().items():
            if value is not None:
                parts[key] = value
    return parts


def available_device_types() -> Set[str]:
    import tensorflow as tf

    return {device.device_type.upper() for device in tf.config.list_physical_devices()}


def device_finding(node, available: Set[str], allow_soft_placement: bool) -> Optional[Finding]:
    if not node.device:
        return None
    parts = parse_device(node.device)
    job = parts.get("job")
    if job and job.lower() != "localhost":
        # Soft placement only moves a node between the local devices; it cannot leave another job's.
        return Finding(code=Code.DEVICE_CLUSTER, op=node.op, nodes=(node.name,),
                       cause=f"pinned to {node.device}, a device of the cluster job '{job}'; a local session has no "
                             "such job, and soft placement cannot move a node off it",
                       fix=CLEAR_DEVICES)
    kind = (parts.get("type") or "").upper()
    if kind and kind not in available:
        return Finding(code=Code.DEVICE_UNAVAILABLE, op=node.op, nodes=(node.name,),
                       cause=f"pinned to {node.device}, but this host has no {kind}",
                       fix=f"{CLEAR_DEVICES}; or run with soft placement (coldchain doctor/infer "
                           "--allow-soft-placement, or allow_soft_placement=True in the session config), which "
                           "places such nodes on the CPU",
                       severity=WARNING if allow_soft_placement else ERROR)
    return None


def node_findings(node, known_functions: Set[str], available: Set[str], allow_soft_placement: bool) -> List[Finding]:
    from tensorflow.python.framework import op_def_registry

    findings: List[Finding] = []
    if node.op in known_functions:
        return findings
    op_def = op_def_registry.get(node.op)
    if op_def is None:
        findings.append(Finding(
            code=Code.UNREGISTERED_OP, op=node.op, nodes=(node.name,),
            cause=f"op {node.op} is not registered in this TensorFlow; it is a custom op or comes from a newer TF",
            fix="ship the op's shared library and load it before importing (coldchain infer --load-op-libraries, "
                "tf.load_op_library), or re-freeze with this runtime's TensorFlow"))
    else:
        allowed = {attr.name for attr in op_def.attr}
        unknown = sorted(name for name in node.attr if name not in allowed and not name.startswith("_"))
        if unknown:
            findings.append(Finding(
                code=Code.UNKNOWN_ATTR, op=node.op, nodes=(node.name,),
                cause=f"attributes {unknown} are not in this TensorFlow's OpDef for {node.op} (graph made by a newer TF)",
                fix="in the environment that froze it, re-export with default-valued attributes stripped "
                    "(coldchain reexport MODEL --strip-default-attrs; works when they hold their defaults), or freeze "
                    "with this runtime's TensorFlow"))
        if node.op in TRAINING_OPS:
            findings.append(Finding(
                code=Code.TRAINING_OP, op=node.op, nodes=(node.name,),
                cause=f"{node.op} needs live variables: the graph still holds variable or saver operations",
                fix="freeze the variables to constants (TensorFlow's freeze_graph, convert_variables_to_constants); "
                    "if these are batch norm's moving-average updates, rebuild the network with is_training=False"))
        elif any(arg.is_ref for arg in list(op_def.input_arg) + list(op_def.output_arg)):
            findings.append(Finding(
                code=Code.REF_DTYPE, op=node.op, nodes=(node.name,),
                cause=f"{node.op} takes or returns a reference-typed tensor (a live variable)",
                fix="freeze the variables to constants before export"))
        if node.op in BATCH_NORM_OPS and "is_training" in node.attr and node.attr["is_training"].b:
            findings.append(Finding(
                code=Code.BATCH_NORM_TRAINING, op=node.op, nodes=(node.name,),
                cause="batch norm normalises with the batch's own statistics (is_training=True): the graph was built "
                      "in training mode, so a prediction depends on the other images in its batch",
                fix="rebuild the network with is_training=False (slim: resnet_v1_50(..., is_training=False), as "
                    "export_inference_graph.py does), restore the checkpoint, then freeze"))
    for name, value in node.attr.items():
        types = [value.type] if value.HasField("type") else list(value.list.type)
        if any(dtype >= REF_TYPE_OFFSET for dtype in types):
            findings.append(Finding(
                code=Code.REF_DTYPE, op=node.op, nodes=(node.name,),
                cause=f"attribute {name} has a reference dtype (a variable reference left in the graph)",
                fix="freeze the variables to constants before export"))
            break
    device = device_finding(node, available, allow_soft_placement)
    if device is not None:
        findings.append(device)
    return findings


def check_graph_def(graph_def, allow_soft_placement: bool = False) -> List[Finding]:
    import tensorflow as tf

    findings: List[Finding] = []
    versions = graph_def.versions
    runtime = tf.version.GRAPH_DEF_VERSION
    runtime_min_consumer = tf.version.GRAPH_DEF_VERSION_MIN_CONSUMER
    runtime_min_producer = getattr(tf.version, "GRAPH_DEF_VERSION_MIN_PRODUCER", 0)
    if versions.min_consumer > runtime:
        findings.append(Finding(
            code=Code.GRAPH_TOO_NEW,
            cause=f"graph requires consumer version >= {versions.min_consumer}; this TF {tf.__version__} is {runtime}",
            fix="run inference with a TF at least as new as the one that froze the graph, or re-freeze with this TF"))
    if versions.producer and versions.producer < runtime_min_producer:
        findings.append(Finding(
            code=Code.GRAPH_TOO_OLD,
            cause=f"graph producer {versions.producer} is older than this TF supports ({runtime_min_producer})",
            fix="re-freeze the model with a newer TensorFlow"))
    if runtime in list(versions.bad_consumers):
        findings.append(Finding(code=Code.BAD_CONSUMER, cause=f"graph lists this TF's version {runtime} among bad_consumers",
                                fix="use a different TensorFlow version for inference"))
    if versions.producer > runtime:
        findings.append(Finding(
            code=Code.NEWER_PRODUCER, severity=WARNING,
            cause=f"graph produced by GraphDef version {versions.producer}, newer than this TF's {runtime} "
                  f"(min consumer {runtime_min_consumer})",
            fix="fine if no op/attr findings follow; otherwise freeze with this TF or strip default attrs"))
    known_functions = {function.signature.name for function in graph_def.library.function}
    available = available_device_types()
    for node in graph_def.node:
        findings.extend(node_findings(node, known_functions, available, allow_soft_placement))
    for function in graph_def.library.function:
        for node in function.node_def:
            for finding in node_findings(node, known_functions, available, allow_soft_placement):
                findings.append(replace(finding, nodes=tuple(f"{function.signature.name}/{n}" for n in finding.nodes)))
    return findings
