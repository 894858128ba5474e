"""The architecture, checked: one contract across the container boundary (no literal of it written
elsewhere), no import cycles on either side, the host's packages in layers that never import upward,
every file stating its one job in its first line."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from coldchain import contract
from conftest import ROOT

HOST = ROOT / "coldchain"
CONTAINER = ROOT / "scripts" / "incontainer"
CONTRACT_FILE = CONTAINER / "contract.py"


def sources(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*.py") if "__pycache__" not in path.parts)


def distinctive(value: str) -> bool:
    """A name only the contract can mean (a file, a module, a mount point, a flag, an environment variable, a
    code): plain words like 'input' or 'error' have other meanings too and are not claimed."""
    return any(mark in value for mark in ".-/:") or value.startswith(("COLDCHAIN_", "TF_"))


def contract_strings() -> dict[str, str]:
    """Every distinctive string the contract defines (constants, Code, MODULES values), value -> its name."""
    values: dict[str, str] = {}
    for name, value in vars(contract).items():
        if name.startswith("_") or not name.isupper():
            continue
        if isinstance(value, str):
            values.setdefault(value, name)
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, str):
                    values.setdefault(item, f"{name}[{key!r}]")
        elif isinstance(value, tuple):
            continue  # tuples of codes are made of the Code constants below
    for name, value in vars(contract.Code).items():
        if not name.startswith("_") and isinstance(value, str):
            values.setdefault(value, f"Code.{name}")
    return {value: name for value, name in values.items() if distinctive(value)}


TENSOR_NAME = re.compile(r"^(input|logits|probabilities|top_k):\d+$")
# Literals that spell a contract value but belong to another program: pip's own --report, docker save's index.
NOT_THE_CONTRACT = {("coldchain/environments/requirements.py", "--report"),
                    ("coldchain/environments/rootfs_image.py", "manifest.json")}


def string_literals(path: Path):
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body and \
                isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant):
            docstrings.add(id(node.body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def test_no_contract_literal_is_written_outside_the_contract():
    wanted = contract_strings()
    offenders = []
    for path in sources(HOST) + sources(CONTAINER):
        if path == CONTRACT_FILE:
            continue
        for line, value in string_literals(path):
            if (str(path.relative_to(ROOT)), value) in NOT_THE_CONTRACT:
                continue
            if value in wanted:
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {value!r} is contract.{wanted[value]}")
            elif TENSOR_NAME.match(value):
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {value!r} is contract.tensor_name(...)")
    assert offenders == [], "\n".join(offenders)


def test_the_cpu_flags_that_decide_numerics_are_listed_only_in_the_contract():
    listed = set(contract.ONEDNN_DEFAULT_FLAGS)
    offenders = [f"{path.relative_to(ROOT)}:{line}: {value!r} is in contract.ONEDNN_DEFAULT_FLAGS"
                 for path in sources(HOST) + sources(CONTAINER) if path != CONTRACT_FILE
                 for line, value in string_literals(path) if value in listed]
    assert offenders == [], "\n".join(offenders)


def logged_prefixes():
    """(where, first word) of every progress line the container logs (common.log), from the call's
    literal start ("" where the message starts with no literal)."""
    for path in sources(CONTAINER):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "log" and node.args:
                first = node.args[0]
                while isinstance(first, ast.BinOp):  # "a: " + ...
                    first = first.left
                if isinstance(first, ast.JoinedStr) and first.values:
                    first = first.values[0]
                text = first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else ""
                yield f"{path.relative_to(ROOT)}:{node.lineno}", text.split(" ", 1)[0]


def test_every_progress_line_a_container_logs_has_a_prefix_the_host_shows():
    found = list(logged_prefixes())
    assert len(found) > 20, "the scan finds the container's log calls"
    offenders = [f"{where}: {word!r}" for where, word in found if word not in contract.PROGRESS_PREFIXES]
    assert offenders == [], "\n".join(offenders)


def parser_progs(path: Path) -> list[str]:
    """How each ArgumentParser in the file names its program: "MODULES[key]" where it is
    f"python -m {MODULES[key]}", else the source of the prog argument ("" without one)."""
    progs = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "ArgumentParser":
            prog = next((keyword.value for keyword in node.keywords if keyword.arg == "prog"), None)
            parts = prog.values if isinstance(prog, ast.JoinedStr) else []
            if len(parts) == 2 and isinstance(parts[0], ast.Constant) and parts[0].value == "python -m " and \
                    isinstance(parts[1].value, ast.Subscript) and getattr(parts[1].value.value, "id", "") == "MODULES":
                progs.append(f"MODULES[{ast.literal_eval(parts[1].value.slice)!r}]")
            else:
                progs.append(ast.unparse(prog) if prog is not None else "")
    return progs


@pytest.mark.parametrize("key", sorted(contract.MODULES))
def test_every_module_the_host_runs_names_itself_as_the_contract_does(key):
    path = CONTAINER.parent / (contract.MODULES[key].replace(".", "/") + ".py")
    assert parser_progs(path) == [f"MODULES[{key!r}]"]


def declared_flags() -> set[str]:
    """The contract's flags an in-container parser declares (add_argument(FLAG_...))."""
    found = set()
    for path in sources(CONTAINER):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
                found.update(arg.id for arg in node.args if isinstance(arg, ast.Name) and arg.id.startswith("FLAG_"))
    return found


def test_every_contract_flag_is_one_a_container_module_declares():
    flags = {name for name in vars(contract) if name.startswith("FLAG_")}
    assert sorted(flags - declared_flags()) == []


def _module_name(path: Path, root: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """module -> the package's modules it imports, at any depth of the file (function-level imports too)."""
    modules = {_module_name(path, root, package): path for path in sources(root)}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [f"{module}.{alias.name}" for alias in node.names] + [module]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for other in sorted(graph[node]):
            if state.get(other) == "open":
                found.append(stack[stack.index(other):] + [other])
            elif other not in state:
                visit(other)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


@pytest.mark.parametrize("root, package", [(HOST, "coldchain"), (CONTAINER, "incontainer")], ids=["host", "container"])
def test_no_import_cycle(root, package):
    assert cycles(import_graph(root, package)) == []


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


# The host's packages and top-level modules, bottom layer first: a module imports only from its own
# layer or those below, function-local imports included (within a layer the cycle test rules).
HOST_LAYERS = (
    ("coldchain", "contract", "errors", "fsutil", "hostinfo", "cache", "confine", "owner", "signals"),  # shared basics
    ("config", "engine"),
    ("environments",),
    ("steps",),
    ("drift",),
    ("bench",),
    ("cli", "options", "__main__"),
)


def unit(module: str) -> str:
    """The package or top-level module a module belongs to: coldchain.drift.runner -> drift."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer_violations(graph: dict[str, set[str]], layers: tuple[tuple[str, ...], ...]) -> list[str]:
    level = {name: index for index, names in enumerate(layers) for name in names}
    unplaced = sorted({unit(module) for module in graph} - set(level))
    assert unplaced == [], f"place {unplaced} in a layer"
    return [f"{module} imports {target}: {unit(target)} is above {unit(module)}"
            for module, targets in sorted(graph.items()) for target in sorted(targets)
            if level[unit(target)] > level[unit(module)]]


def test_host_packages_never_import_a_layer_above():
    assert layer_violations(import_graph(HOST, "coldchain"), HOST_LAYERS) == []


def test_the_layer_check_finds_a_function_local_import_upward(tmp_path):
    for path, text in {"steps/__init__.py": "", "drift/__init__.py": "", "drift/runner.py": "from ..steps import pipeline\n",
                       "steps/pipeline.py": "def run():\n    from ..drift.runner import go\n"}.items():
        (tmp_path / path).parent.mkdir(exist_ok=True)
        (tmp_path / path).write_text(text)
    graph = import_graph(tmp_path, "kit")
    assert graph["kit.steps.pipeline"] == {"kit.drift.runner"}
    assert layer_violations(graph, (("kit",), ("steps",), ("drift",))) == [
        "kit.steps.pipeline imports kit.drift.runner: drift is above steps"]


def test_every_name_the_host_imports_from_itself_exists():
    """Function-local imports fail only when they run: a module split or renamed (drift/runner.py's
    parts, the matrix moved below steps/) must leave every name importable where it is imported from."""
    import importlib.util

    missing = []
    for path in sources(HOST):
        name = _module_name(path, HOST, "coldchain")
        here = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not (node.level or (node.module or "").startswith("coldchain")):
                continue
            base = here.split(".")[: len(here.split(".")) - node.level + 1] if node.level else []
            module = importlib.import_module(".".join(base + ([node.module] if node.module else [])))
            missing += [f"{path.relative_to(ROOT)}:{node.lineno}: {module.__name__}.{alias.name}"
                        for alias in node.names if not hasattr(module, alias.name) and not (
                            hasattr(module, "__path__") and importlib.util.find_spec(f"{module.__name__}.{alias.name}"))]
    assert missing == []


@pytest.mark.parametrize("path", sources(HOST) + sources(CONTAINER), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_file_states_its_job_in_its_first_line(path):
    tree = ast.parse(path.read_text())
    docstring = ast.get_docstring(tree)
    if path.name == "__main__.py":
        return
    assert docstring and len(docstring.splitlines()[0]) > 20, f"{path}: no docstring stating the file's job"


# What the command line may import: its own modules, the option definitions and the kit's plain data
# (configuration, contract, errors), the steps, the drift commands and the bench it hands requests to;
# base.py connects the engine. Nothing it hands requests to imports it back.
CLI_IMPORTS = ("coldchain", "coldchain.options", "coldchain.config", "coldchain.contract", "coldchain.errors",
               "coldchain.signals")


def test_the_cli_only_parses_and_hands_requests_to_steps_drift_or_bench():
    graph = import_graph(HOST, "coldchain")
    offenders = []
    for name, targets in sorted(graph.items()):
        for target in sorted(targets):
            if name.startswith("coldchain.cli"):
                allowed = target in CLI_IMPORTS or target.startswith(("coldchain.cli", "coldchain.steps.",
                                                                      "coldchain.bench.")) or \
                    target in ("coldchain.drift.commands", "coldchain.drift.transfer_commands") or \
                    (name, target) == ("coldchain.cli.base", "coldchain.engine.docker")
                if not allowed:
                    offenders.append(f"{name} imports {target}")
            elif target.startswith("coldchain.cli") and name != "coldchain.__main__":
                offenders.append(f"{name} imports the command line ({target})")
    assert offenders == []


def test_no_function_is_over_80_lines():
    """Issue #19's rule: a function that long does several jobs; split it by stage."""
    long = []
    for path in sorted([*ROOT.glob("coldchain/**/*.py"), *ROOT.glob("scripts/**/*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})")
    assert not long, "functions over 80 lines: " + ", ".join(long)
