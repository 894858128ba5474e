"""A model's bf16 budget: how far bf16 rounding alone moves its golden tensors, measured when it is
frozen or adopted, and the rule that judges a bf16 run by it.

Why: a fixed fraction of each tensor's magnitude (DEFAULT_BF16_TOLERANCE) encodes one model. A
saturated softmax hides the logits' drift; an unsaturated one passes it on to the probabilities, and
large logits move them further (bf16 keeps 8 significant bits: near 200, values are 1 apart). So it
is measured on the model, in the reference environment (TensorFlow, fp32, on the CPU: no bf16
kernel is involved, so no CPU feature decides it): a copy of the graph in which the operands of
every matrix op and softmax, and the golden tensors, are rounded to bfloat16 (nearest even, by
integer bit operations) runs the golden inputs. The manifest records each golden tensor's
deviation (golden.precision_budget); a bf16 run may deviate by BF16_BUDGET_SAFETY_FACTOR times it.

The measuring half imports TensorFlow inside its functions; the judging half is plain Python, read
by every runtime image and by the host's tests.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

from ..common import log
from ..contract import BF16_BUDGET_SAFETY_FACTOR, GOLDEN_LOGITS_KEY, GOLDEN_PROBABILITIES_KEY, PRECISION_BF16

BUDGET_FIELD = "precision_budget"  # in the manifest's golden section: {"bf16": {...}}
# Ops whose operands OpenVINO's CPU plugin (oneDNN, AMX/AVX512_BF16) reads in bf16 and that carry
# nearly all of bf16's error: a matrix op multiplies thousands of rounded values (accumulating in
# fp32); softmax ignores an offset of its input, so the rounding of a large logit is all error.
# Elementwise ops (batch norm, ReLU, the residual add) round a value once: left out, they would be
# rounded once per TensorFlow op where OpenVINO fuses them into the convolution and rounds once.
ROUNDED_OPS = ("Conv2D", "DepthwiseConv2dNative", "MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3",
               "Softmax", "LogSoftmax")
NODE_PREFIX = "coldchain_bf16"
EMULATION = ("inputs and weights of every {ops}, and the golden tensors as read, rounded to bfloat16 (round to "
             "nearest even) in TensorFlow, fp32 on the CPU")
# float32 -> bfloat16, nearest even, on the bits: add 0x7FFF plus the lowest kept bit, drop 16 bits.
# Integer ops are exact everywhere; TensorFlow's Cast to bfloat16 is a kernel whose rounding and
# grappler treatment could differ between the versions a reference environment may have.
ROUNDING_CONSTANTS = {"sixteen": 16, "one": 1, "half": 0x7FFF, "mask": -0x10000}


# --- judging: plain Python --------------------------------------------------------------------------
def bf16_deviations(manifest: dict) -> Optional[Dict[str, float]]:
    """{golden key: measured max abs deviation}, or None for a manifest written before the budget."""
    budget = ((manifest.get("golden") or {}).get(BUDGET_FIELD) or {}).get(PRECISION_BF16)
    if not isinstance(budget, dict):
        return None
    return {key: float(value["max_abs_diff"]) for key, value in budget.get("tensors", {}).items()}


def bf16_tolerance(fp32_tol: float, fraction_tol: float, deviation: Optional[float]) -> float:
    """A golden tensor's abs_tol at bf16: the widest of its fp32 tolerance, the declared fraction of
    its magnitude and the safety factor times the deviation bf16 rounding caused on this model. The
    top-1 check reads the decisive tensor's abs_tol, so images whose top-1 margin is within twice
    that (where a flip is possible) do not count."""
    measured = BF16_BUDGET_SAFETY_FACTOR * deviation if deviation is not None else 0.0
    return max(fp32_tol, fraction_tol, measured)


def precision_rule(deviations: Optional[Dict[str, float]], fraction: float) -> dict:
    """What a bf16 run was judged by, in words and numbers, for the probe and infer reports."""
    if deviations is None:
        return {"precision": PRECISION_BF16, "budget": False, "fraction": fraction,
                "text": f"bf16 judged by {fraction:g} of each golden tensor's magnitude: the manifest predates the "
                        f"measured bf16 budget (golden.{BUDGET_FIELD}); freeze or adopt the model again to measure "
                        "it"}
    return {"precision": PRECISION_BF16, "budget": True, "fraction": fraction,
            "safety_factor": BF16_BUDGET_SAFETY_FACTOR,
            "text": f"bf16 judged by the model's measured budget: {BF16_BUDGET_SAFETY_FACTOR:g}x the deviation bf16 "
                    f"rounding caused in the reference environment, at least {fraction:g} of each tensor's magnitude"}


def problems(section, tensor_keys) -> list:
    """(field, message) for each mistake in a golden.precision_budget section (manifest validator)."""
    where = f"golden.{BUDGET_FIELD}"
    if not isinstance(section, dict) or not isinstance(section.get(PRECISION_BF16), dict):
        return [(where, f"must be an object with a {PRECISION_BF16!r} object")]
    tensors = section[PRECISION_BF16].get("tensors")
    where = f"{where}.{PRECISION_BF16}.tensors"
    if not isinstance(tensors, dict) or not tensors:
        return [(where, "must map golden tensor keys to their measured deviation")]
    found = []
    for key, value in tensors.items():
        deviation = value.get("max_abs_diff") if isinstance(value, dict) else None
        if key not in tensor_keys:
            found.append((f"{where}.{key}", "is not a tensor of golden.tensors"))
        elif isinstance(deviation, bool) or not isinstance(deviation, (int, float)) or not math.isfinite(deviation) \
                or deviation < 0:
            found.append((f"{where}.{key}.max_abs_diff", f"{deviation!r} must be a finite number >= 0"))
    return found


# --- measuring: TensorFlow, in the reference environment ----------------------------------------------
def emulated_graph_def(graph_def, ops=ROUNDED_OPS, outputs: Sequence[str] = ()):
    """(a copy of the graph with every float input of `ops` rounded to bfloat16, the names of `outputs`
    rounded too (OpenVINO hands out what it stored in bf16), how many tensors were rounded).
    Devices are cleared: the budget is a CPU measurement, like the golden."""
    import tensorflow as tf

    copy = type(graph_def)()
    copy.CopyFrom(graph_def)
    for node in copy.node:
        node.device = ""
    constants = {}
    for name, value in ROUNDING_CONSTANTS.items():
        node = copy.node.add(name=f"{NODE_PREFIX}/{name}", op="Const")
        node.attr["dtype"].type = tf.int32.as_datatype_enum
        node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value, tf.int32))
        constants[name] = node.name
    rounded: Dict[str, str] = {}  # an activation feeding several convolutions is rounded once
    for node in list(copy.node):
        if node.op not in ops or _operand_type(node) != tf.float32.as_datatype_enum:
            continue
        for index, source in enumerate(node.input[:2]):
            if source.startswith("^"):
                continue
            if source not in rounded:
                rounded[source] = _rounded(copy, source, f"{NODE_PREFIX}/{len(rounded)}", constants)
            node.input[index] = rounded[source]
    read = [_rounded(copy, name, f"{NODE_PREFIX}/read{index}", constants) + ":0" for index, name in enumerate(outputs)]
    return copy, read, len(rounded) + len(read)


def _operand_type(node) -> Optional[int]:
    # BatchMatMulV3 types its operands Ta/Tb; reading a missing key of a proto map would add it.
    for attr in ("T", "Ta"):
        if attr in node.attr:
            return node.attr[attr].type
    return None


def _rounded(graph_def, source: str, prefix: str, constants: dict) -> str:
    """Nodes computing `source` rounded to bfloat16 and widened back to float32; the result's name."""
    import tensorflow as tf

    def add(name: str, op: str, inputs: list, **types) -> str:
        node = graph_def.node.add(name=f"{prefix}/{name}", op=op, input=inputs)
        for attr, dtype in types.items():
            node.attr[attr].type = dtype.as_datatype_enum
        return node.name

    i32, f32 = tf.int32, tf.float32
    bits = add("bits", "Bitcast", [source], T=f32, type=i32)
    lowest_kept = add("lsb", "BitwiseAnd", [add("shift", "RightShift", [bits, constants["sixteen"]], T=i32),
                                            constants["one"]], T=i32)
    biased = add("sum", "AddV2", [bits, add("bias", "AddV2", [lowest_kept, constants["half"]], T=i32)], T=i32)
    return add("value", "Bitcast", [add("kept", "BitwiseAnd", [biased, constants["mask"]], T=i32)], T=i32, type=f32)


def _in_batches(run, inputs, limit: Optional[int]) -> dict:
    """The golden inputs through `run`, in pieces of a fixed batch where the graph has one (the last
    piece padded, as the golden check does)."""
    import numpy as np

    size = limit or len(inputs)
    parts = []
    for start in range(0, len(inputs), size):
        piece = inputs[start:start + size]
        padded = np.concatenate([piece, np.repeat(piece[-1:], size - len(piece), axis=0)]) if limit else piece
        parts.append({key: value[:len(piece)] for key, value in run(padded).items()})
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def measure_bf16(graph_def, manifest: dict, arrays: dict) -> dict:
    """The bf16 section of golden.precision_budget: each golden tensor's deviation under emulated
    bf16 and the top-1 agreement, on the golden inputs only."""
    import numpy as np
    import tensorflow as tf

    golden = manifest["golden"]
    names = {entry["key"]: entry["name"] for entry in golden["tensors"]}
    emulated, read, count = emulated_graph_def(graph_def, outputs=list(names.values()))
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(emulated, name="")
    shape = manifest["inputs"][0].get("shape") or [None]
    config = tf.compat.v1.ConfigProto(device_count={"GPU": 0}, allow_soft_placement=True)
    # The copy runs once per batch: optimising it (folding the rounding of every weight) cost more than
    # it saved, 4.4 s against 1.4 s at 224 px. The fp32 arithmetic it keeps is the same to ~1e-6.
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    config.graph_options.optimizer_options.opt_level = tf.compat.v1.OptimizerOptions.L0
    with tf.compat.v1.Session(graph=graph, config=config) as session:
        feed = manifest["inputs"][0].get("tensor") or f"{manifest['inputs'][0]['name']}:0"
        run = lambda batch: dict(zip(names, session.run(read, {feed: batch})))  # noqa: E731
        values = _in_batches(run, arrays[golden["input_key"]], shape[0] if isinstance(shape[0], int) else None)
    tensors = {}
    for key in names:
        reference = arrays[key].astype(np.float64)
        deviation = float(np.max(np.abs(values[key].astype(np.float64) - reference))) if reference.size else 0.0
        scale = float(np.max(np.abs(reference))) if reference.size else 0.0
        # Deterministic for given numerics; another CPU's fp32 kernels (oneDNN on/off, AVX2) flip some
        # roundings and move it by up to 25% (measured): the safety factor covers that too.
        tensors[key] = {"max_abs_diff": float(f"{deviation:.4g}"),
                        "fraction_of_magnitude": float(f"{deviation / scale:.4g}") if scale else 0.0}
    decisive = GOLDEN_LOGITS_KEY if GOLDEN_LOGITS_KEY in names else GOLDEN_PROBABILITIES_KEY
    reference, actual = (np.reshape(a, (len(a), -1)) for a in (arrays[decisive], values[decisive]))
    agree = int(np.sum(np.argmax(reference, axis=1) == np.argmax(actual, axis=1)))
    return {"emulation": EMULATION.format(ops="/".join(ROUNDED_OPS)), "rounded_tensors": count,
            "tensors": tensors, "top1": {"key": decisive, "agree": agree, "count": len(reference)}}


def record_budget(manifest: dict, graph_def, arrays: dict) -> None:
    """freeze and adopt: measure the model's bf16 budget and write it into the manifest's golden section."""
    import tensorflow as tf

    try:
        manifest["golden"][BUDGET_FIELD] = {PRECISION_BF16: measure_bf16(graph_def, manifest, arrays)}
    except (tf.errors.OpError, ValueError) as error:
        # The model itself ran for its golden: a copy that does not is the emulation's failing, no reason to
        # refuse the model. Without a budget, bf16 runs are judged by the fixed fraction and say so.
        log(f"coldchain: bf16 budget not measured ({str(error).splitlines()[0][:200]}): bf16 runs of this model will be judged "
            "by the fixed fraction of each tensor's magnitude")
