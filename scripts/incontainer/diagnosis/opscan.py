"""The graph scanned for ops an inference graph never needs: ops that read or write files, run Python,
or talk to the network, in the GraphDef's nodes and in every function its library holds (a
tf.function body, a dataset's map function, the branches of If/While), each named with its call path.

TensorFlow's own security guidance (SECURITY.md in tensorflow/tensorflow, "TensorFlow models are
programs") says a GraphDef alone lets TensorFlow "read and write files, send and receive data over
the network, and even spawn additional processes", and that one answer is "to allow only a few safe
Ops". The lists below are TensorFlow's registered ops of exactly those kinds (core/ops/io_ops.cc,
script_ops.cc, summary_ops.cc, logging_ops.cc, debug_ops.cc, dataset_ops.cc, lookup_ops.cc, ...).
Ops no registry knows are the UNREGISTERED_OP finding (preflight.py): their code is a custom-op library
that only --load-op-libraries runs, so this scan does not guess about them.

Plain Python over the protobuf's fields: no TensorFlow needed, so the host's tests can run it too.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Sequence, Set, Tuple

from ..contract import Code, FLAG_ALLOW_OP
from .findings import ERROR, WARNING, Finding

READS_FILES = "reads files"
WRITES_FILES = "writes files"
RUNS_PYTHON = "runs Python code in the serving process"
NETWORK = "sends or receives data over the network"

# op -> what it does that an inference graph (pixels in, probabilities out) never needs.
DANGEROUS_OPS: Dict[str, str] = {
    **dict.fromkeys((
        "ReadFile", "MatchingFiles", "Restore", "RestoreV2", "RestoreSlice", "LoadAndRemapMatrix",
        "ImmutableConst",  # memory-maps the file its memory_region_name attribute names
        "TFRecordReader", "TFRecordReaderV2", "FixedLengthRecordReader", "FixedLengthRecordReaderV2",
        "WholeFileReader", "WholeFileReaderV2", "TextLineReader", "TextLineReaderV2", "LMDBReader",
        "InitializeTableFromTextFile", "InitializeTableFromTextFileV2",
        "TFRecordDataset", "TFRecordDatasetV2", "FixedLengthRecordDataset", "FixedLengthRecordDatasetV2",
        "TextLineDataset", "CSVDataset", "CSVDatasetV2", "ExperimentalCSVDataset", "LMDBDataset",
        "ExperimentalLMDBDataset", "SqlDataset", "ExperimentalSqlDataset", "MatchingFilesDataset",
        "ExperimentalMatchingFilesDataset", "LoadDataset", "ExperimentalLoadDataset"), READS_FILES),
    **dict.fromkeys((
        "WriteFile", "Save", "SaveV2", "SaveSlices", "MergeV2Checkpoints", "DatasetToTFRecord",
        "ExperimentalDatasetToTFRecord", "SaveDataset", "SaveDatasetV2", "SnapshotDataset", "SnapshotDatasetV2",
        "CacheDataset", "CacheDatasetV2", "CreateSummaryFileWriter", "CreateSummaryDbWriter", "SummaryWriter",
        "WriteSummary", "WriteRawProtoSummary", "WriteScalarSummary", "WriteHistogramSummary", "WriteImageSummary",
        "WriteAudioSummary", "WriteGraphSummary", "ImportEvent", "FlushSummaryWriter", "CloseSummaryWriter"),
        WRITES_FILES),
    **dict.fromkeys(("PyFunc", "PyFuncStateless", "EagerPyFunc"), RUNS_PYTHON),
    **dict.fromkeys((
        # debug_urls may be grpc:// (a debugger server) or file:// (a dump directory)
        "DebugIdentity", "DebugIdentityV2", "DebugIdentityV3", "DebugNanCount", "DebugNumericSummary",
        "DebugNumericSummaryV2",
        "RpcClient", "RpcCall", "RpcServer", "RpcServerStart", "RpcServerRegister", "Rpc", "TryRpc",
        "DataServiceDataset", "DataServiceDatasetV2", "DataServiceDatasetV3", "DataServiceDatasetV4",
        "RegisterDataset", "RegisterDatasetV2", "DistributedSave",
        "GcsConfigureCredentials", "GcsConfigureBlockCache", "BigQueryReader"), NETWORK),
}
# Ops harmless unless an attribute sends their output to a file: PrintV2's output_stream "file://...".
FILE_STREAM_ATTRS = {"PrintV2": "output_stream"}
FILE_URL = "file://"


def _file_stream(node) -> bool:
    attr = FILE_STREAM_ATTRS.get(node.op)
    if not attr or attr not in node.attr:
        return False
    value = node.attr[attr].s
    return (value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)).startswith(FILE_URL)


def why_dangerous(node) -> str:
    """What the node does that an inference graph never needs; "" when nothing."""
    if node.op in DANGEROUS_OPS:
        return DANGEROUS_OPS[node.op]
    return WRITES_FILES if _file_stream(node) else ""


def called_functions(node, library: Set[str]) -> List[str]:
    """The library functions a node calls: its op (a direct call) and every function-valued attribute
    (PartitionedCall's f, If's branches, While's cond and body, a dataset's map function)."""
    called = [node.op] if node.op in library else []
    for _, value in sorted(node.attr.items()):
        names = [value.func.name] if value.HasField("func") else [func.name for func in value.list.func]
        called.extend(name for name in names if name in library)
    return called


def dangerous_nodes(graph_def) -> List[Tuple[str, str, str]]:
    """(where, op, why) of every dangerous node: top-level nodes by name, function bodies as
    "caller/function/node" along the first call path that reaches them; functions nothing calls are
    scanned too (a name can be called from outside this graph)."""
    functions = {function.signature.name: function for function in graph_def.library.function}
    found: List[Tuple[str, str, str]] = []
    scanned: Set[str] = set()

    def walk(nodes: Iterable, prefix: str) -> None:
        for node in nodes:
            where = f"{prefix}{node.name}"
            why = why_dangerous(node)
            if why:
                found.append((where, node.op, why))
            for name in called_functions(node, set(functions)):
                if name not in scanned:  # each body once: recursion and shared callees end here
                    scanned.add(name)
                    walk(functions[name].node_def, f"{where}/{name}/")

    walk(graph_def.node, "")
    for name in sorted(set(functions) - scanned):
        scanned.add(name)
        walk(functions[name].node_def, f"{name}/")
    return found


def scan(graph_def, allowed: Sequence[str] = ()) -> List[Finding]:
    """One finding per dangerous node: blocking, or a warning where --allow-op names its op."""
    findings = []
    for where, op, why in dangerous_nodes(graph_def):
        allowed_here = op in allowed
        findings.append(Finding(
            code=Code.DANGEROUS_OP, op=op, nodes=(where,), severity=WARNING if allowed_here else ERROR,
            cause=f"{op} {why}: an inference graph (pixels in, probabilities out) never needs that, and TensorFlow "
                  "runs it with this process's permissions when the graph runs",
            fix=f"re-export the inference graph without it (slim's export_inference_graph.py, then freeze_graph); "
                f"if you trust the model and need the op, allow it: {FLAG_ALLOW_OP} {op}",
            confirmed=f"allowed by {FLAG_ALLOW_OP} {op}" if allowed_here else ""))
    return findings


def unallowed(findings: Sequence[Finding]) -> List[Finding]:
    return [finding for finding in findings if finding.code == Code.DANGEROUS_OP and finding.severity == ERROR]
