"""coldchain doctor: whether THIS TensorFlow can load and run a frozen graph, and if not, why and how
to fix it. The verdict comes from the runtime itself, in stages:

1. manifest: schema, required fields, sha256, golden.npz, labels against the classes, preprocessing;
2. static: the GraphDef read without executing it (op registry, attrs, versions, devices, variables,
   training-mode batch norm, custom-op libraries by the TF they were built for): causes TF never names;
3. import: this runtime's own importer (tf.import_graph_def into an empty graph); it confirms or
   refutes the static findings - a graph it rejects is never loadable;
4. run (unless --no-run): one execution on inputs of the declared shape, plus the same first image
   alone, which catches device placement and batch-dependent (training-mode) outputs.

Works wherever TensorFlow imports, in a coldchain image or not:
    python -m incontainer.diagnosis.doctor path/to/model.pb [--manifest path/to/manifest.json]
"""
from __future__ import annotations

import argparse
import glob
import os
import platform
import re
from dataclasses import dataclass, field, replace
from typing import List, Optional, Sequence

import numpy as np

from ..common import emit_json, log, quiet_tensorflow_logs, run_main
from ..confine import plain_name, read_bounded
from ..contract import (FLAG_ALLOW_OP, FLAG_ALLOW_SOFT_PLACEMENT, FLAG_JSON, FLAG_LOAD_OP_LIBRARIES, FLAG_MANIFEST,
                        FLAG_NO_RUN, FLAG_OP_LIBRARY, MANIFEST_FILE, MODULES, OPS_DIR, STAGE_IMPORT, STAGE_MANIFEST,
                        STAGE_RUN, STAGE_STATIC, Code, exit_for_outcome)
from ..graph import manifest as manifests
from ..graph.graphdef import (ImportFailed, NotAFrozenGraph, UnreadableGraph, classify_run_error, first_line,
                              import_graph, parse_graph_def, placeholder_shape, placeholders, read_model_bytes, sinks,
                              sniff_directory, sniff_name)
from ..graph.model_files import ModelFiles, ModelLoader
from ..graph.oplibs import (OpLibraryError, abi_compatible, architecture_message, load_op_library, minor_version,
                            read_marker, wrong_architecture)
from ..runtime import TRACKED_PACKAGES, describe
from . import opscan
from .findings import ERROR, WARNING, Finding, blocking, group, outcome_of, where
from .preflight import check_graph_def

# Static findings the runtime can refute by importing or running the graph anyway.
REFUTABLE_BY_IMPORT = (Code.UNKNOWN_ATTR,)
REFUTABLE_BY_RUN = (Code.TRAINING_OP, Code.REF_DTYPE, Code.DEVICE_UNAVAILABLE, Code.DEVICE_CLUSTER,
                    Code.BATCH_NORM_TRAINING)
# Import errors that are the consequence of a static finding with another code.
EXPLAINS = {Code.REF_DTYPE: (Code.TRAINING_OP, Code.BATCH_NORM_TRAINING), Code.LOAD_ERROR: (Code.TRAINING_OP,)}
DEFAULT_SIDE = 224  # spatial size fed where the graph leaves it open and no manifest says


@dataclass(frozen=True)
class DoctorOptions:
    model: str
    manifest: Optional[str] = None
    op_libraries: tuple = ()
    load_shipped_op_libraries: bool = False
    allow_soft_placement: bool = False
    run: bool = True  # stage 4: execute the graph once (the caller allows it)
    allowed_ops: tuple = ()  # --allow-op: ops the graph scan lets through (diagnosis/opscan.py), recorded


# Findings about the file and its manifest, whatever runtime reads them.
# A dangerous op is one too: the file it reads or the process it starts is there whichever runtime runs it.
GRAPH_LEVEL = (Code.NOT_A_GRAPH, Code.MODEL_UNREADABLE, Code.SHA256_MISMATCH, Code.MANIFEST_INVALID, Code.MISSING_NODE,
               Code.DANGEROUS_OP)


@dataclass
class Diagnosis:
    model: str
    runtime: dict
    findings: List[Finding] = field(default_factory=list)
    loaded_libraries: List[str] = field(default_factory=list)
    stages: dict = field(default_factory=dict)
    graph_def: object = None
    graph: object = None  # the imported tf.Graph, for callers that go on to run it
    manifest: Optional[dict] = None
    allowed_ops: List[str] = field(default_factory=list)  # --allow-op, as given: the override is recorded

    @property
    def blocking(self) -> List[Finding]:
        return blocking(self.findings)

    @property
    def outcome(self) -> Optional[str]:
        return outcome_of(self.findings)

    @property
    def blocking_before_running(self) -> List[Finding]:
        """Blocking findings that running the graph cannot refute: stop before running it."""
        return [finding for finding in self.blocking
                if not (finding.stage == STAGE_STATIC and finding.code in REFUTABLE_BY_RUN)]

    def confirm(self, code: str, message: str, stage: str) -> None:
        """The runtime refused the graph: the static findings that explain it are confirmed errors."""
        _confirm(self, code, message, stage)

    def add(self, code: str, cause: str, fix: str, severity: str = ERROR, detail: str = "") -> None:
        """A finding from the run stage outside TensorFlow: a converter, another runtime."""
        self.findings.append(Finding(code, cause, fix, severity=severity, stage=STAGE_RUN, detail=detail))

    def for_runtime(self, runtime: str) -> None:
        """Another runtime reads the graph itself: what only TensorFlow's registry, version or placer
        refuses (an op, an attr, a device) is no reason to stop it, so those errors become warnings;
        a broken file or manifest still blocks. A run that confirms a finding upgrades it again."""
        self.findings = [finding.downgraded(f"a TensorFlow matter; {runtime} reads the graph itself")
                         if finding.severity == ERROR and finding.code not in GRAPH_LEVEL else finding
                         for finding in self.findings]

    def ran(self, how: str) -> None:
        """The runtime ran the graph (and its outputs did not depend on the batch): static findings
        that predicted it could not are refuted, kept as warnings."""
        self.stages[STAGE_RUN] = "ran"
        self.findings = [finding.downgraded(f"this TensorFlow {how}")
                         if finding.code in REFUTABLE_BY_RUN and finding.stage == STAGE_STATIC
                         and finding.severity == ERROR else finding for finding in self.findings]

    def to_json(self) -> dict:
        return {"model": self.model, "runtime": self.runtime, "outcome": self.outcome,
                "blocking": len(self.blocking), "loaded_libraries": self.loaded_libraries, "stages": self.stages,
                "allowed_ops": self.allowed_ops,
                "findings": [finding.to_json() for finding in group(self.findings)]}


def diagnose(options: DoctorOptions, files: Optional[ModelFiles] = None) -> Diagnosis:
    """The diagnosis, stage by stage. Input that is not a frozen graph at all (a SavedModel, a
    checkpoint, an image, an archive) is bad input and raised as such, named for what it is; a
    graph file that is corrupt is a finding. `files`: the model directory as the caller already read
    it (a ModelSession), so that nothing is read twice; by default the doctor reads it itself."""
    hint = _not_a_frozen_graph(options.model)
    if hint:
        raise NotAFrozenGraph(hint)
    if files is None:
        files = ModelLoader.for_model(options.model, options.manifest).files()
    model_file, model_dir = files.model_file, files.model_dir
    diagnosis = Diagnosis(model=model_file, runtime=describe(), allowed_ops=sorted(set(options.allowed_ops)))
    if files.has_manifest:
        _manifest_stage(diagnosis, files)
    data = files.bytes_of(model_file) or read_model_bytes(model_file, "pass a frozen model.pb or its directory")
    try:
        graph_def = parse_graph_def(data, model_file)
    except UnreadableGraph as error:
        diagnosis.findings.append(Finding(Code.MODEL_UNREADABLE, str(error),
                                          "copy the model again, or re-export it: a frozen graph is a binary GraphDef "
                                          "(.pb) or its text form (.pbtxt)"))
        diagnosis.stages[STAGE_STATIC] = "unreadable"
        return diagnosis
    diagnosis.graph_def = graph_def
    libraries = _library_findings(diagnosis, options, diagnosis.manifest, model_dir)
    static = check_graph_def(graph_def, allow_soft_placement=options.allow_soft_placement)
    diagnosis.findings.extend(_explain_unregistered(finding, libraries) for finding in static)
    dangerous = opscan.scan(graph_def, options.allowed_ops)
    diagnosis.findings.extend(dangerous)
    if diagnosis.manifest:
        diagnosis.findings.extend(_interface_findings(graph_def, diagnosis.manifest))
        diagnosis.findings.extend(_environment_findings(diagnosis.manifest, diagnosis.runtime))
    diagnosis.stages[STAGE_STATIC] = "done"
    _import_stage(diagnosis)
    if options.run and diagnosis.graph is not None and opscan.unallowed(dangerous):
        diagnosis.stages[STAGE_RUN] = f"skipped: the graph holds {Code.DANGEROUS_OP} nodes, which running would execute"
    elif options.run and diagnosis.graph is not None:
        _run_stage(diagnosis, options)
    elif diagnosis.graph is not None:
        diagnosis.stages[STAGE_RUN] = "skipped"
    return diagnosis


def _not_a_frozen_graph(model: str) -> Optional[str]:
    """What a model argument is when it is plainly no frozen graph: a SavedModel or checkpoint
    directory, or such a file (or a missing file in such a directory)."""
    if os.path.isdir(model):
        return sniff_directory(model)
    directory = os.path.dirname(model) or "."
    return sniff_name(model) or (not os.path.exists(model) and os.path.isdir(directory) and sniff_directory(directory)) \
        or None


def _manifest_stage(diagnosis: Diagnosis, files: ModelFiles) -> None:
    """The manifest's findings, from the model directory as read: schema, sha256, golden.npz, labels,
    preprocessing."""
    def add(problem) -> None:
        diagnosis.findings.append(Finding(problem.code, f"{files.manifest_path}: {problem.field}: {problem.message}",
                                          _manifest_fix(problem), stage=STAGE_MANIFEST))
    if files.read_error is not None:
        diagnosis.findings.append(Finding(Code.MANIFEST_INVALID, str(files.read_error), "restore the manifest.json "
                                          "written by freeze or adopt", stage=STAGE_MANIFEST))
        diagnosis.stages[STAGE_MANIFEST] = "unreadable"
        return
    for problem in files.problems:
        add(problem)
    if files.problems:
        diagnosis.stages[STAGE_MANIFEST] = f"{len(files.problems)} problem(s)"
        return
    diagnosis.manifest = files.manifest
    error = files.model_error
    if error is not None:
        if error.code != Code.SHA256_MISMATCH:
            raise error
        diagnosis.findings.append(Finding(Code.SHA256_MISMATCH, str(error), "copy the model directory again (model.pb "
                                          "with its manifest.json), or re-run freeze / adopt", stage=STAGE_MANIFEST))
    for problem in files.directory_problems:
        add(problem)
    diagnosis.stages[STAGE_MANIFEST] = "done"


def _manifest_fix(problem) -> str:
    if problem.field == "labels":
        return "pass the labels file the model was trained with (coldchain adopt --labels FILE --labels-offset N)"
    if problem.field.startswith("preprocessing"):
        return "restore the preprocessing fields the model was frozen with (or re-run freeze / adopt)"
    return "restore the manifest.json written by freeze or adopt (re-run them to regenerate it)"


def _import_stage(diagnosis: Diagnosis) -> None:
    try:
        diagnosis.graph = import_graph(diagnosis.graph_def)
    except ImportFailed as error:
        diagnosis.stages[STAGE_IMPORT] = f"rejected: {error.code}"
        _confirm(diagnosis, error.code, str(error), STAGE_IMPORT)
        return
    diagnosis.stages[STAGE_IMPORT] = "ok"
    diagnosis.findings = [
        finding.downgraded("this TensorFlow's importer accepted the graph and ignores these attributes; check the "
                           "outputs with the golden probe (coldchain infer, coldchain drift-test)")
        if finding.code in REFUTABLE_BY_IMPORT and finding.stage == STAGE_STATIC else finding
        for finding in diagnosis.findings]


def _confirm(diagnosis: Diagnosis, code: str, message: str, stage: str) -> None:
    """The runtime refused the graph for `code`: static findings that explain it become errors
    confirmed by that stage; an unexplained refusal is a finding of its own, TF's words quoted."""
    explaining = (code,) + EXPLAINS.get(code, ())
    named = set(referenced_nodes(message))
    matched = False
    findings = []
    for finding in diagnosis.findings:
        if finding.stage == STAGE_STATIC and (finding.code in explaining or named & set(finding.nodes)):
            matched = True
            finding = replace(finding.upgraded(f"confirmed by the {stage} stage"), detail=message)
        findings.append(finding)
    diagnosis.findings = findings
    if not matched:
        diagnosis.findings.append(Finding(code, f"this TensorFlow's {stage} refused the graph: {message}",
                                          _runtime_fix(code), stage=stage, detail=message))


_NODE_IN_MESSAGE = re.compile(r"(?:\{\{node |[Nn]ode '?|node: )([A-Za-z0-9_./-]+)")


def referenced_nodes(message: str) -> List[str]:
    """The nodes TensorFlow names in an error ("Input 1 of node top was passed ...", "{{node x}}")."""
    return [name.rstrip(".:'") for name in _NODE_IN_MESSAGE.findall(message)]


def _runtime_fix(code: str) -> str:
    from .preflight import CLEAR_DEVICES

    return {
        Code.UNREGISTERED_OP: "load the library that defines the op before importing, or freeze with this TensorFlow",
        Code.UNKNOWN_ATTR: "re-export with default attributes stripped (coldchain reexport --strip-default-attrs) or "
                           "freeze with this TensorFlow",
        Code.GRAPH_TOO_NEW: "run with a TensorFlow at least as new as the one that froze the graph",
        Code.REF_DTYPE: "freeze the variables to constants; rebuild training-mode networks with is_training=False",
        Code.TRAINING_OP: "freeze the variables to constants (freeze_graph); rebuild with is_training=False",
        Code.DEVICE_UNAVAILABLE: CLEAR_DEVICES,
        Code.DEVICE_CLUSTER: CLEAR_DEVICES,
    }.get(code, "the quoted error names the node; re-export the graph with the TensorFlow you run it with")


def _feed_for(diagnosis: Diagnosis):
    """Inputs of the declared shape for every placeholder: open batch -> 2 rows, open sides -> the
    manifest's or 224. Seeded values (not zeros) so that a batch-dependent graph shows itself."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    manifest_shape = (diagnosis.manifest or {}).get("inputs", [{}])[0].get("shape") if diagnosis.manifest else None
    feed, open_batch = {}, True
    for node in placeholders(diagnosis.graph_def):
        shape = placeholder_shape(node)
        if shape is None:
            shape = list(manifest_shape) if manifest_shape else [None, DEFAULT_SIDE, DEFAULT_SIDE, 3]
        if shape and shape[0] is not None:
            open_batch = False
        concrete = []
        for index, size in enumerate(shape):
            if size is None and index == 0:
                size = 2
            elif size is None:
                declared = manifest_shape[index] if manifest_shape and index < len(manifest_shape) else None
                size = declared or (3 if index == len(shape) - 1 else DEFAULT_SIDE)
            concrete.append(size)
        dtype = tf.dtypes.as_dtype(node.attr["dtype"].type).as_numpy_dtype if "dtype" in node.attr else np.float32
        values = rng.uniform(-1.0, 1.0, size=concrete) if np.issubdtype(dtype, np.floating) else np.zeros(concrete)
        feed[f"{node.name}:0"] = values.astype(dtype)
    return feed, open_batch


def _fetches(diagnosis: Diagnosis) -> List[str]:
    if diagnosis.manifest:
        # A name the graph lacks is the manifest's finding (missing-node), not something to run.
        names = {node.name for node in diagnosis.graph_def.node}
        return [manifests.tensor_of(entry) for entry in diagnosis.manifest["outputs"]
                if entry["name"] in names and manifests.tensor_of(entry).split(":")[0] in names]
    fetches = []
    for name in sinks(diagnosis.graph_def):
        operation = diagnosis.graph.get_operation_by_name(name)
        if operation.outputs:
            fetches.append(operation.outputs[0].name)
    return fetches


def _run_stage(diagnosis: Diagnosis, options: DoctorOptions) -> None:
    import tensorflow as tf

    fetches = _fetches(diagnosis)
    feed, open_batch = _feed_for(diagnosis)
    if not fetches or not feed:
        diagnosis.stages[STAGE_RUN] = "skipped: no inputs or outputs to run"
        return
    config = tf.compat.v1.ConfigProto(allow_soft_placement=options.allow_soft_placement)
    try:
        with tf.compat.v1.Session(graph=diagnosis.graph, config=config) as session:
            together = session.run(fetches, feed)
            alone = session.run(fetches, {name: value[:1] for name, value in feed.items()}) if open_batch else None
    except (tf.errors.OpError, ValueError, TypeError) as error:
        message = first_line(error)
        code = classify_run_error(message)
        diagnosis.stages[STAGE_RUN] = f"failed: {code}"
        _confirm(diagnosis, code, message, STAGE_RUN)
        return
    if alone is not None:
        pairs = [(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)) for a, b in zip(together, alone)
                 if np.asarray(a).dtype.kind == "f" and np.asarray(a).ndim >= 1]
        worst = max((float(np.max(np.abs(a[:1] - b))) for a, b in pairs), default=0.0)
        scale = max((float(np.max(np.abs(a))) for a, _ in pairs), default=0.0)
        if worst > 1e-3 * max(scale, 1.0):
            diagnosis.stages[STAGE_RUN] = "ran; outputs depend on the batch"
            cause = (f"an image alone gives outputs {worst:.3g} away from the same image inside a batch of 2: the "
                     "predictions depend on the other images in the batch")
            _confirm(diagnosis, Code.BATCH_NORM_TRAINING, cause, STAGE_RUN)
            return
    diagnosis.ran("imported and ran the graph" + (" (outputs independent of the batch)" if alone is not None else ""))


def _library_findings(diagnosis: Diagnosis, options: DoctorOptions, manifest: Optional[dict], model_dir: str) -> dict:
    """Known libraries (shipped, declared, or passed) -> what they provide; loads those asked for."""
    import tensorflow as tf

    declared = {entry.get("library"): entry for entry in (manifest or {}).get("custom_ops", [])
                if isinstance(entry, dict) and entry.get("library")}
    for index, relative in enumerate(declared):
        plain_name(relative, f"custom_ops[{index}].library", os.path.join(model_dir, MANIFEST_FILE))
    shipped = sorted(os.path.relpath(path, model_dir) for path in glob.glob(os.path.join(model_dir, OPS_DIR, "*.so")))
    candidates = {}
    for relative in sorted(set(declared) | set(shipped)):
        candidates[os.path.join(model_dir, relative)] = ("shipped", declared.get(relative, {}))
    for path in options.op_libraries:
        candidates[path] = ("given", {})
    known = {}
    for path, (origin, entry) in candidates.items():
        marker = machine = None
        if os.path.isfile(path):  # bounded, and no link out of the model directory (confine.Refused)
            data = read_bounded(path, "op-library", model_dir if origin == "shipped" else None)
            marker, machine = read_marker(data), wrong_architecture(data)
        compiled = (marker or {}).get("tensorflow") or entry.get("compiled_against_tensorflow")
        ops = (marker or {}).get("ops") or entry.get("ops") or []
        known[path] = {"ops": ops, "compiled": compiled, "present": os.path.isfile(path)}
        name = os.path.basename(path)
        if not os.path.isfile(path):
            diagnosis.findings.append(Finding(
                Code.OP_LIBRARY_MISSING, op=",".join(ops),
                cause=f"the manifest declares op library {name} (ops {ops}) but it is not at {path}",
                fix="ship the library in the model directory's ops/ folder, as freeze wrote it"))
            continue
        if machine is not None:  # before the ABI: the right TensorFlow does not help the wrong machine
            diagnosis.findings.append(Finding(
                Code.OP_LIBRARY_ARCH, architecture_message(name, machine),
                f"compile {name} for {platform.machine()} (against this TensorFlow's headers, in an image of this "
                "platform) and ship it beside the model, or run inference on an "
                f"{machine} machine", op=",".join(ops)))
            continue
        compatible = abi_compatible(compiled, tf.__version__)
        if compatible is False:
            diagnosis.findings.append(Finding(
                Code.OP_LIBRARY_ABI, op=",".join(ops),
                cause=f"{name} was compiled against TensorFlow {compiled}, this runtime is {tf.__version__}; TF's C++ "
                      "ABI differs between releases (loading fails with 'undefined symbol')",
                fix=f"rebuild the library against TensorFlow {tf.__version__}'s headers (tf.sysconfig.get_compile_flags()),"
                    f" or run inference with TensorFlow {minor_version(compiled)}"))
            continue
        if compatible is None:
            diagnosis.findings.append(Finding(
                Code.OP_LIBRARY_UNVERSIONED, op=",".join(ops), severity=WARNING,
                cause=f"{name} does not say which TensorFlow it was compiled against (no coldchain marker), so only "
                      "loading it can tell whether its C++ ABI matches TensorFlow " + tf.__version__,
                fix=f"load it ({FLAG_LOAD_OP_LIBRARIES}) and rely on the result; rebuild it against this TensorFlow if "
                    "loading fails"))
        if origin == "given" or options.load_shipped_op_libraries:
            try:
                load_op_library(path)
                diagnosis.loaded_libraries.append(path)
            except OpLibraryError as error:
                diagnosis.findings.append(Finding(error.code, str(error), "rebuild the library for this TensorFlow "
                                                  "and platform", op=",".join(ops)))
    return known


def _explain_unregistered(finding: Finding, libraries: dict) -> Finding:
    if finding.code != Code.UNREGISTERED_OP:
        return finding
    providers = [path for path, info in libraries.items() if finding.op in info["ops"]]
    if not providers:
        return replace(finding, cause=f"op {finding.op} is not registered in this TensorFlow and no known library "
                                      "provides it: a custom op whose library was not shipped, or an op from a newer "
                                      "TensorFlow",
                       fix="ship the custom-op library that defines it (model/ops/*.so) and load it before importing, "
                           "or re-freeze without the op / with this runtime's TensorFlow")
    import tensorflow as tf

    path = providers[0]
    info = libraries[path]
    if not info["present"]:
        fix = f"ship {os.path.basename(path)} in the model's {OPS_DIR}/ folder and load it"
    elif abi_compatible(info["compiled"], tf.__version__) is False:
        fix = f"rebuild {os.path.basename(path)} against this TensorFlow, then load it"
    else:
        fix = (f"load {path} before importing the graph: coldchain infer {FLAG_LOAD_OP_LIBRARIES}, "
               f"or tf.load_op_library('{path}')")
    return replace(finding, cause=f"op {finding.op} is not registered: it is a custom op from {os.path.basename(path)} "
                                  f"(compiled against TensorFlow {info['compiled'] or 'unknown'}), which is not loaded",
                   fix=fix)


def _interface_findings(graph_def, manifest: dict) -> list:
    nodes = {node.name for node in graph_def.node}
    outputs = sinks(graph_def)
    findings = []
    wanted = [("input", entry.get("name")) for entry in manifest.get("inputs", []) if isinstance(entry, dict)] + \
             [("output", entry.get("name")) for entry in manifest.get("outputs", []) if isinstance(entry, dict)]
    for role, name in wanted:
        if name and name not in nodes:
            findings.append(Finding(
                Code.MISSING_NODE, nodes=(name,), stage=STAGE_MANIFEST,
                cause=f"the manifest's {role} node {name!r} is not in the graph"
                      + (f" (nodes nothing consumes, i.e. likely outputs: {outputs[:6]})" if role == "output" else ""),
                fix="use the node names the graph really has (coldchain adopt --output NAME), or re-freeze so the "
                    "names match the manifest"))
    return findings


def _environment_findings(manifest: dict, runtime: dict) -> list:
    frozen = manifest.get("environment") or {}
    differences = [f"{name} {frozen.get(name)} -> {runtime.get(name)}" for name in TRACKED_PACKAGES
                   if frozen.get(name) and runtime.get(name) and frozen.get(name) != runtime.get(name)]
    if not differences:
        return []
    return [Finding(Code.ENVIRONMENT_DIFFERS, severity=WARNING, stage=STAGE_MANIFEST,
                    cause="this environment differs from the one that froze the graph: " + ", ".join(differences),
                    fix="expected across TF versions; the golden probe (coldchain infer / drift-test) measures "
                        "whether the outputs still match")]


def parse_args(argv: Optional[Sequence[str]]):
    parser = argparse.ArgumentParser(prog=f"python -m {MODULES['doctor']}", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="frozen model.pb (binary or text), or the model directory holding it")
    parser.add_argument(FLAG_MANIFEST, help="manifest.json (default: the one beside the model, if any)")
    parser.add_argument(FLAG_OP_LIBRARY, action="append", default=[], help="load this op library first (repeatable)")
    parser.add_argument(FLAG_LOAD_OP_LIBRARIES, dest="load_op_libraries", action="store_true",
                        help="load the libraries in the model's ops/ folder (runs their code)")
    parser.add_argument(FLAG_ALLOW_SOFT_PLACEMENT, dest="allow_soft_placement", action="store_true",
                        help="device pins to absent devices become warnings")
    parser.add_argument(FLAG_NO_RUN, dest="run", action="store_false",
                        help="stop after the import stage (do not execute the graph)")
    parser.add_argument(FLAG_ALLOW_OP, dest="allow_op", action="append", default=[], metavar="OP",
                        help=f"let this op through the scan for {Code.DANGEROUS_OP} (repeatable; recorded)")
    parser.add_argument(FLAG_JSON, action="store_true", help="print the diagnosis as JSON")
    args = parser.parse_args(argv)
    return DoctorOptions(model=args.model, manifest=args.manifest, op_libraries=tuple(args.op_library),
                         load_shipped_op_libraries=args.load_op_libraries,
                         allow_soft_placement=args.allow_soft_placement, run=args.run,
                         allowed_ops=tuple(args.allow_op)), args.json


def render(diagnosis: Diagnosis) -> str:
    runtime = diagnosis.runtime
    lines = [f"doctor: {diagnosis.model} on TensorFlow {runtime['tensorflow']} (Python {runtime['python']})",
             "  stages: " + ", ".join(f"{stage} {state}" for stage, state in diagnosis.stages.items())]
    if diagnosis.allowed_ops:
        lines.append(f"  allowed by {FLAG_ALLOW_OP}: " + ", ".join(diagnosis.allowed_ops))
    findings = group(diagnosis.findings)
    if not findings:
        lines.append("  no problems found: this runtime can load and run the graph")
    for finding in findings:
        lines.append(f"  [{finding.severity}] {finding.code} ({finding.stage}){where(finding)}")
        lines.append(f"      cause: {finding.cause}")
        if finding.detail and finding.detail not in finding.cause:
            lines.append(f"      runtime said: {finding.detail}")
        if finding.confirmed:
            lines.append(f"      {finding.confirmed}")
        lines.append(f"      fix:   {finding.fix}")
    verdict = f"{len(group(diagnosis.blocking))} blocking problem(s); outcome {diagnosis.outcome}" \
        if diagnosis.blocking else "loadable"
    lines.append(f"  verdict: {verdict}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> Optional[int]:
    quiet_tensorflow_logs()
    options, as_json = parse_args(argv)
    diagnosis = diagnose(options)
    if as_json:
        emit_json(diagnosis.to_json(), indent=2)
    else:
        from ..common import host_paths

        print(host_paths(render(diagnosis)), flush=True)
    if diagnosis.blocking:
        log(f"doctor: {len(group(diagnosis.blocking))} blocking problem(s) in {diagnosis.model}")
    return exit_for_outcome(diagnosis.outcome)


if __name__ == "__main__":
    raise SystemExit(run_main(main))
