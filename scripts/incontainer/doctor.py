"""coldchain doctor: every problem that would stop THIS TensorFlow from loading or running a frozen
graph, each with its cause and its fix, found before anything in the graph is executed.

Works wherever TensorFlow imports (inside a coldchain image or any other environment):
    python -m incontainer.doctor path/to/model.pb [--manifest path/to/manifest.json]
It reads the GraphDef statically (op registry, attrs, producer/min-consumer versions, devices,
ref-typed inputs, training-mode ops), checks custom-op libraries by the TF version they were
compiled against, and, with a manifest, the file's sha256, the input/output node names and how this
environment differs from the one that froze the graph.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
from dataclasses import asdict, dataclass, field
from typing import List, Optional, Sequence

from .common import InsideError, log, quiet_tensorflow_logs, read_json_file, run_main, sha256_bytes
from .manifest import MANIFEST_FILENAME, MODEL_FILENAME, not_a_frozen_model, read_model_bytes
from .oplibs import OpLibraryError, abi_compatible, load_op_library, minor_version, read_marker
from .preflight import ERROR, WARNING, Finding, blocking, check_graph_def, parse_graph_def

# When several problems block a graph, the outcome is named after the most fundamental one.
OUTCOME_PRIORITY = (
    "model-unreadable", "model-sha256-mismatch", "graph-too-new", "graph-too-old", "bad-consumer",
    "op-library-abi-mismatch", "op-library-missing", "op-library-load-failed", "unregistered-op", "unknown-attr",
    "training-op", "ref-dtype", "batch-norm-training-mode", "device-unavailable", "device-cluster", "missing-node",
)
# Packages whose version changes what a frozen graph computes or how it loads.
TRACKED_PACKAGES = ("tensorflow", "numpy", "protobuf", "pillow")


@dataclass(frozen=True)
class DoctorOptions:
    model: str
    manifest: Optional[str] = None
    op_libraries: tuple = ()
    load_shipped_op_libraries: bool = False
    allow_soft_placement: bool = False


@dataclass
class Diagnosis:
    model: str
    runtime: dict
    findings: List[Finding] = field(default_factory=list)
    loaded_libraries: List[str] = field(default_factory=list)
    graph_def: object = None

    @property
    def blocking(self) -> List[Finding]:
        return blocking(self.findings)

    @property
    def outcome(self) -> Optional[str]:
        codes = [finding.code for finding in self.blocking]
        if not codes:
            return None
        return min(codes, key=lambda code: OUTCOME_PRIORITY.index(code) if code in OUTCOME_PRIORITY else len(OUTCOME_PRIORITY))

    def to_json(self) -> dict:
        return {"model": self.model, "runtime": self.runtime, "outcome": self.outcome,
                "blocking": len(self.blocking), "loaded_libraries": self.loaded_libraries,
                "findings": [asdict(finding) for finding in self.findings]}


def runtime_description() -> dict:
    import numpy
    import tensorflow as tf

    description = {"tensorflow": tf.__version__, "graph_def_version": tf.version.GRAPH_DEF_VERSION,
                   "python": platform.python_version(), "numpy": numpy.__version__,
                   "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS")}
    try:
        from google import protobuf
        description["protobuf"] = protobuf.__version__
    except ImportError:  # pragma: no cover
        pass
    try:
        import PIL
        description["pillow"] = PIL.__version__
    except ImportError:
        pass
    return description


def resolve_paths(model: str, manifest: Optional[str]) -> tuple[str, Optional[str], str]:
    """(model.pb, manifest or None, model directory) from a file or directory argument."""
    if os.path.isdir(model):
        model_dir, model_file = model, os.path.join(model, MODEL_FILENAME)
    else:
        model_dir, model_file = os.path.dirname(model) or ".", model
    if manifest is None and os.path.isfile(os.path.join(model_dir, MANIFEST_FILENAME)):
        manifest = os.path.join(model_dir, MANIFEST_FILENAME)
    return model_file, manifest, model_dir


def diagnose(options: DoctorOptions) -> Diagnosis:
    model_file, manifest_path, model_dir = resolve_paths(options.model, options.manifest)
    diagnosis = Diagnosis(model=model_file, runtime=runtime_description())
    manifest = read_json_file(manifest_path, "manifest", "pass --manifest with the manifest.json written by freeze") \
        if manifest_path else None
    hint = not_a_frozen_model(options.model) or (not os.path.exists(model_file) and not_a_frozen_model(model_dir))
    if hint:
        raise InsideError(hint)
    data = read_model_bytes(model_file, "pass a frozen model.pb or its directory")
    if manifest and isinstance(manifest.get("model"), dict) and manifest["model"].get("sha256"):
        actual = sha256_bytes(data)
        if actual != manifest["model"]["sha256"]:
            diagnosis.findings.append(Finding(
                code="model-sha256-mismatch", node="", op="",
                cause=f"sha256 {actual[:16]}... differs from the manifest's {manifest['model']['sha256'][:16]}...: "
                      "the file was modified, truncated or replaced after freezing",
                fix="copy the model directory again (model.pb with its manifest.json), or re-run freeze"))
    try:
        graph_def = parse_graph_def(data, model_file)
    except InsideError as error:
        diagnosis.findings.append(Finding(code="model-unreadable", node="", op="", cause=str(error),
                                          fix="copy the model again or re-run freeze; a frozen graph is a "
                                              "binary GraphDef (model.pb), not a SavedModel or checkpoint"))
        return diagnosis
    diagnosis.graph_def = graph_def

    libraries = _library_findings(diagnosis, options, manifest, model_dir)
    findings = check_graph_def(graph_def, allow_soft_placement=options.allow_soft_placement)
    diagnosis.findings.extend(_explain_unregistered(finding, libraries) for finding in findings)
    if manifest:
        diagnosis.findings.extend(_interface_findings(graph_def, manifest))
        diagnosis.findings.extend(_environment_findings(manifest, diagnosis.runtime))
    return diagnosis


def _library_findings(diagnosis: Diagnosis, options: DoctorOptions, manifest: Optional[dict], model_dir: str) -> dict:
    """Known libraries (shipped, declared, or passed) -> what they provide; loads those asked for."""
    import tensorflow as tf

    declared = {entry.get("library"): entry for entry in (manifest or {}).get("custom_ops", []) if entry.get("library")}
    shipped = sorted(os.path.relpath(path, model_dir) for path in glob.glob(os.path.join(model_dir, "ops", "*.so")))
    candidates = {}
    for relative in sorted(set(declared) | set(shipped)):
        candidates[os.path.join(model_dir, relative)] = ("shipped", declared.get(relative, {}))
    for path in options.op_libraries:
        candidates[path] = ("given", {})
    known = {}
    for path, (origin, entry) in candidates.items():
        marker = None
        if os.path.isfile(path):
            with open(path, "rb") as handle:
                marker = read_marker(handle.read())
        compiled = (marker or {}).get("tensorflow") or entry.get("compiled_against_tensorflow")
        ops = (marker or {}).get("ops") or entry.get("ops") or []
        known[path] = {"ops": ops, "compiled": compiled, "present": os.path.isfile(path)}
        if not os.path.isfile(path):
            diagnosis.findings.append(Finding(
                code="op-library-missing", node="", op=",".join(ops),
                cause=f"the manifest declares op library {os.path.basename(path)} (ops {ops}) but it is not at {path}",
                fix="ship the library in the model directory's ops/ folder, as freeze wrote it"))
            continue
        if not abi_compatible(compiled, tf.__version__):
            diagnosis.findings.append(Finding(
                code="op-library-abi-mismatch", node="", op=",".join(ops),
                cause=f"{os.path.basename(path)} was compiled against TensorFlow {compiled}, this runtime is "
                      f"{tf.__version__}; TF's C++ ABI differs between releases (loading fails with 'undefined symbol')",
                fix=f"rebuild the library against TensorFlow {tf.__version__}'s headers (tf.sysconfig.get_compile_flags()),"
                    f" or run inference with TensorFlow {minor_version(compiled)}"))
            continue
        if origin == "given" or options.load_shipped_op_libraries:
            try:
                load_op_library(path)
                diagnosis.loaded_libraries.append(path)
            except OpLibraryError as error:
                diagnosis.findings.append(Finding(code=error.code, node="", op=",".join(ops), cause=str(error),
                                                  fix="rebuild the library for this TensorFlow and platform"))
    return known


def _explain_unregistered(finding: Finding, libraries: dict) -> Finding:
    if finding.code != "unregistered-op":
        return finding
    providers = [path for path, info in libraries.items() if finding.op in info["ops"]]
    if not providers:
        return Finding(finding.code, finding.node, finding.op,
                       f"op {finding.op} is not registered in this TensorFlow and no known library provides it: "
                       "a custom op whose library was not shipped, or an op from a newer TensorFlow",
                       "ship the custom-op library that defines it (model/ops/*.so) and load it before importing, "
                       "or re-freeze without the op / with this runtime's TensorFlow", finding.severity)
    path = providers[0]
    info = libraries[path]
    if not info["present"]:
        fix = f"ship {os.path.basename(path)} in the model's ops/ folder and load it"
    elif not abi_compatible(info["compiled"], _runtime_version()):
        fix = f"rebuild {os.path.basename(path)} against this TensorFlow, then load it"
    else:
        fix = (f"load {path} before importing the graph: coldchain infer --load-op-libraries, "
               f"or tf.load_op_library('{path}')")
    return Finding(finding.code, finding.node, finding.op,
                   f"op {finding.op} is not registered: it is a custom op from {os.path.basename(path)} "
                   f"(compiled against TensorFlow {info['compiled'] or 'unknown'}), which is not loaded",
                   fix, finding.severity)


def _runtime_version() -> str:
    import tensorflow as tf

    return tf.__version__


def _interface_findings(graph_def, manifest: dict) -> list:
    nodes = {node.name for node in graph_def.node}
    consumed = {name.lstrip("^").split(":")[0] for node in graph_def.node for name in node.input}
    sinks = sorted(name for name in nodes if name not in consumed)
    findings = []
    wanted = [("input", entry.get("name")) for entry in manifest.get("inputs", []) if isinstance(entry, dict)] + \
             [("output", entry.get("name")) for entry in manifest.get("outputs", []) if isinstance(entry, dict)]
    for role, name in wanted:
        if name and name not in nodes:
            findings.append(Finding(
                code="missing-node", node=name, op="",
                cause=f"the manifest's {role} node {name!r} is not in the graph"
                      + (f" (nodes nothing consumes, i.e. likely outputs: {sinks[:6]})" if role == "output" else ""),
                fix="use the node names the graph really has, or re-freeze so the names match the manifest"))
    return findings


def _environment_findings(manifest: dict, runtime: dict) -> list:
    frozen = manifest.get("environment") or {}
    differences = [f"{name} {frozen.get(name)} -> {runtime.get(name)}" for name in TRACKED_PACKAGES
                   if frozen.get(name) and runtime.get(name) and frozen.get(name) != runtime.get(name)]
    if not differences:
        return []
    return [Finding(code="environment-differs", node="", op="",
                    cause="this environment differs from the one that froze the graph: " + ", ".join(differences),
                    fix="expected across TF versions; the golden probe (coldchain infer / drift-test) measures "
                        "whether the outputs still match", severity=WARNING)]


def parse_args(argv: Sequence[str] | None) -> tuple[DoctorOptions, bool]:
    parser = argparse.ArgumentParser(prog="python -m incontainer.doctor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="frozen model.pb, or the model directory holding it")
    parser.add_argument("--manifest", help="manifest.json (default: the one beside the model, if any)")
    parser.add_argument("--op-library", action="append", default=[], help="load this op library first (repeatable)")
    parser.add_argument("--load-shipped-op-libraries", action="store_true",
                        help="load the libraries in the model's ops/ folder (runs their code)")
    parser.add_argument("--allow-soft-placement", action="store_true", help="device pins become warnings")
    parser.add_argument("--json", action="store_true", help="print the diagnosis as JSON")
    args = parser.parse_args(argv)
    return DoctorOptions(model=args.model, manifest=args.manifest, op_libraries=tuple(args.op_library),
                         load_shipped_op_libraries=args.load_shipped_op_libraries,
                         allow_soft_placement=args.allow_soft_placement), args.json


def render(diagnosis: Diagnosis) -> str:
    runtime = diagnosis.runtime
    lines = [f"doctor: {diagnosis.model} on TensorFlow {runtime['tensorflow']} (Python {runtime['python']})"]
    if not diagnosis.findings:
        lines.append("  no problems found: this runtime can load and run the graph")
    for finding in diagnosis.findings:
        where = f" at {finding.node}" if finding.node else ""
        op = f" ({finding.op})" if finding.op else ""
        lines.append(f"  [{finding.severity}] {finding.code}{where}{op}")
        lines.append(f"      cause: {finding.cause}")
        lines.append(f"      fix:   {finding.fix}")
    verdict = f"{len(diagnosis.blocking)} blocking problem(s); outcome {diagnosis.outcome}" if diagnosis.blocking \
        else "loadable"
    lines.append(f"  verdict: {verdict}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int | None:
    quiet_tensorflow_logs()
    options, as_json = parse_args(argv)
    diagnosis = diagnose(options)
    print(json.dumps(diagnosis.to_json(), indent=2, sort_keys=True) if as_json else render(diagnosis))
    if diagnosis.blocking:
        log(f"doctor: {len(diagnosis.blocking)} blocking problem(s) in {diagnosis.model}")
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
