"""The graph scan for ops an inference graph never needs (incontainer/diagnosis/opscan.py), on GraphDefs
built here. The host has no protobuf (nor TensorFlow), so these are stand-ins with the GraphDef's field
names and AttrValue's HasField; tests/test_opscan_docker.py runs the same scan on real graphs."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import click
from click.testing import CliRunner

from coldchain import options
from coldchain.contract import FLAG_ALLOW_OP, Code, allow_op_arguments, most_fundamental
from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))  # the container side's plain-Python modules
from incontainer.diagnosis import opscan  # noqa: E402
from incontainer.diagnosis.findings import ERROR, WARNING  # noqa: E402


@dataclass
class Func:
    name: str


@dataclass
class FuncList:
    func: list = field(default_factory=list)


@dataclass
class Attr:
    """AttrValue: one of s, func, list (of funcs) set."""
    s: bytes = b""
    func: Func | None = None
    list: FuncList = field(default_factory=FuncList)

    def HasField(self, name):  # noqa: N802 - protobuf's spelling
        return name == "func" and self.func is not None


@dataclass
class Node:
    name: str
    op: str
    attr: dict = field(default_factory=dict)


@dataclass
class Signature:
    name: str


@dataclass
class Function:
    signature: Signature
    node_def: list


@dataclass
class Library:
    function: list = field(default_factory=list)


@dataclass
class GraphDef:
    node: list
    library: Library = field(default_factory=Library)


def function(name, *nodes):
    return Function(Signature(name), list(nodes))


def call(name, target, op="StatefulPartitionedCall"):
    return Node(name, op, {"f": Attr(func=Func(target))})


CLEAN = [Node("input", "Placeholder"), Node("conv", "Conv2D"), Node("probabilities", "Softmax")]


def found(graph_def):
    return [(where, op) for where, op, _ in opscan.dangerous_nodes(graph_def)]


def test_an_inference_graph_has_none():
    assert opscan.scan(GraphDef(CLEAN)) == []


def test_every_example_the_issue_names_is_in_the_list():
    for op in ("ReadFile", "WriteFile", "MatchingFiles", "Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2",
               "RestoreSlice", "MergeV2Checkpoints", "PyFunc", "PyFuncStateless", "EagerPyFunc", "ImmutableConst",
               "TFRecordReaderV2", "WholeFileReaderV2", "DebugIdentity", "WriteSummary", "DatasetToTFRecord"):
        assert found(GraphDef(CLEAN + [Node("x", op)])) == [("x", op)], op


def test_a_top_level_node_is_a_blocking_finding_that_names_node_op_why_and_fix():
    (finding,) = opscan.scan(GraphDef(CLEAN + [Node("leak", "ReadFile")]))
    assert (finding.code, finding.severity, finding.op, finding.nodes) == (Code.DANGEROUS_OP, ERROR, "ReadFile",
                                                                           ("leak",))
    assert opscan.READS_FILES in finding.cause and f"{FLAG_ALLOW_OP} ReadFile" in finding.fix


def test_function_bodies_are_scanned_along_their_call_path():
    graph = GraphDef(CLEAN + [call("run", "outer")], Library([
        function("outer", Node("a", "Identity"), call("deeper", "inner", op="PartitionedCall")),
        function("inner", Node("write", "WriteFile"), Node("py", "EagerPyFunc"))]))
    assert found(graph) == [("run/outer/deeper/inner/write", "WriteFile"), ("run/outer/deeper/inner/py", "EagerPyFunc")]


def test_a_function_called_by_its_op_name_or_a_list_of_functions_is_scanned():
    graph = GraphDef(CLEAN + [Node("direct", "my_fn"),
                              Node("case", "Case", {"branches": Attr(list=FuncList([Func("ok"), Func("bad")]))})],
                     Library([function("my_fn", Node("r", "RestoreV2")), function("ok", Node("i", "Identity")),
                              function("bad", Node("m", "MatchingFiles"))]))
    assert found(graph) == [("direct/my_fn/r", "RestoreV2"), ("case/bad/m", "MatchingFiles")]


def test_recursive_and_shared_functions_are_scanned_once_and_the_scan_ends():
    graph = GraphDef(CLEAN + [call("a", "loop"), call("b", "loop")],
                     Library([function("loop", call("again", "loop"), Node("s", "SaveV2"))]))
    assert found(graph) == [("a/loop/s", "SaveV2")]


def test_a_function_nothing_calls_is_scanned_too():
    graph = GraphDef(CLEAN, Library([function("unused", Node("p", "PyFunc"))]))
    assert found(graph) == [("unused/p", "PyFunc")]


def test_print_is_flagged_only_when_it_writes_to_a_file():
    to_stderr = Node("print", "PrintV2", {"output_stream": Attr(s=b"stderr")})
    to_file = Node("print", "PrintV2", {"output_stream": Attr(s=b"file:///tmp/leak")})
    assert found(GraphDef(CLEAN + [to_stderr])) == []
    assert found(GraphDef(CLEAN + [to_file])) == [("print", "PrintV2")]


def test_an_allowed_op_becomes_a_recorded_warning_and_the_others_still_block():
    graph = GraphDef(CLEAN + [Node("r", "ReadFile"), Node("w", "WriteFile")])
    findings = {finding.op: finding for finding in opscan.scan(graph, allowed=("ReadFile",))}
    assert findings["ReadFile"].severity == WARNING and FLAG_ALLOW_OP in findings["ReadFile"].confirmed
    assert findings["WriteFile"].severity == ERROR
    assert [finding.op for finding in opscan.unallowed(findings.values())] == ["WriteFile"]


def test_the_outcome_is_named_after_it_below_unregistered_and_above_training_ops():
    assert most_fundamental([Code.TRAINING_OP, Code.DANGEROUS_OP]) == Code.DANGEROUS_OP
    assert most_fundamental([Code.DANGEROUS_OP, Code.UNREGISTERED_OP]) == Code.UNREGISTERED_OP


def test_allow_op_from_the_command_line_and_the_environment_reaches_the_container_flags():
    @click.command()
    @options.allow_op
    def show(allowed_ops):
        click.echo(" ".join(allow_op_arguments(allowed_ops)))

    runner = CliRunner()
    assert runner.invoke(show, [FLAG_ALLOW_OP, "ReadFile", FLAG_ALLOW_OP, "PyFunc"]).output.split() == \
        [FLAG_ALLOW_OP, "ReadFile", FLAG_ALLOW_OP, "PyFunc"]
    from_env = runner.invoke(show, [], env={"COLDCHAIN_ALLOW_OP": "ReadFile, WriteFile,ReadFile"})
    assert from_env.output.split() == [FLAG_ALLOW_OP, "ReadFile", FLAG_ALLOW_OP, "WriteFile"]
    assert runner.invoke(show, []).output.split() == []
