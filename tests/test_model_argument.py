"""The model argument of every command, resolved by one rule: a model directory, or the model file in
one, is that directory, mounted at /model; a bare graph goes by name to the commands that take one;
a missing manifest is named by its folder. Commands run against the fake engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from coldchain.cli import main
from coldchain.config import IMAGES
from coldchain.contract import Exit
from coldchain.engine import ImageInfo, RunResult
from coldchain.environments.bases import ResolvedBase
from coldchain.environments.images import BuiltImage
from coldchain.errors import UsageError
from coldchain.steps.runner import Image
from coldchain.steps.model_argument import DIRECTORY, EITHER, GRAPH, matrix_model, resolve_model
from conftest import ROOT
from fake_engine import FakeEngine

IMAGE = BuiltImage(IMAGES["infer-cpu"], "t-infer:cpu", ImageInfo("sha256:abc", ("t-infer:cpu",),
                   {"io.coldchain.lock.sha256": "f00d"}, 1), ResolvedBase("b", "sha256:b", "local", "3.11.2"), False)


@pytest.fixture
def model_dir(tmp_path) -> Path:
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "model.pb").write_bytes(b"graph")
    (directory / "golden.npz").write_bytes(b"golden")
    (directory / "manifest.json").write_text(json.dumps({"model": {"file": "model.pb", "sha256": "ab" * 32}}))
    return directory


@pytest.fixture
def bare_graph(tmp_path) -> Path:
    graphs = tmp_path / "graphs"
    graphs.mkdir()
    (graphs / "frozen.pb").write_bytes(b"graph")
    return graphs / "frozen.pb"


@pytest.mark.parametrize("accepts", [DIRECTORY, EITHER])
def test_a_model_directory_is_mounted_as_itself(model_dir, accepts):
    found = resolve_model(model_dir, accepts)
    assert (found.directory, found.target, found.spelled) == (model_dir, "/model", model_dir)


def test_the_model_file_stands_for_its_directory(model_dir, monkeypatch):
    monkeypatch.chdir(model_dir.parent)
    found = resolve_model(Path("model") / "model.pb")
    assert (found.directory, found.target, found.spelled) == (model_dir, "/model", Path("model"))


def test_a_missing_manifest_names_the_folder_and_the_graph_to_adopt(bare_graph):
    with pytest.raises(UsageError) as caught:
        resolve_model(bare_graph)
    assert caught.value.message.startswith(f"{bare_graph.parent} has no manifest.json")
    assert f"coldchain adopt {bare_graph} --out DIR" in caught.value.fix
    assert ".pb.pb" not in caught.value.fix
    with pytest.raises(UsageError) as caught:
        resolve_model(bare_graph.parent)
    assert caught.value.message.startswith(f"{bare_graph.parent} has no manifest.json")
    assert f"coldchain adopt {bare_graph.parent / 'model.pb'} --out DIR" in caught.value.fix


def test_another_file_beside_a_manifest_is_not_taken_for_the_model(model_dir):
    with pytest.raises(UsageError, match=r"golden.npz: not the model .*manifest.json describes \(model.pb\)") as caught:
        resolve_model(model_dir / "golden.npz")
    assert caught.value.fix == f"pass the model directory {model_dir}"


@pytest.mark.parametrize("accepts, fix", [(DIRECTORY, "make freeze"), (EITHER, "frozen graph file"),
                                          (GRAPH, "the frozen graph file itself")])
def test_a_missing_path_is_named_with_the_fix(tmp_path, accepts, fix):
    with pytest.raises(UsageError, match="nowhere: not found") as caught:
        resolve_model(tmp_path / "nowhere", accepts)
    assert fix in caught.value.fix


def test_a_bare_graph_goes_by_name_where_one_is_taken(bare_graph, model_dir):
    for accepts in (EITHER, GRAPH):
        found = resolve_model(bare_graph, accepts)
        assert (found.directory, found.target) == (bare_graph.parent, "/model/frozen.pb")
    assert resolve_model(bare_graph.parent, EITHER).target == "/model"  # the container says what the folder holds
    assert resolve_model(model_dir / "model.pb", EITHER).target == "/model/model.pb"  # as doctor always passed it
    with pytest.raises(UsageError, match="is a directory"):
        resolve_model(model_dir, GRAPH)


def test_the_matrix_reads_a_model_that_may_not_exist_yet(tmp_path, model_dir):
    assert matrix_model(tmp_path / "out" / "model") == tmp_path / "out" / "model"
    assert matrix_model(model_dir / "model.pb") == model_dir


# --- every command, through the CLI and the fake engine -------------------------------------------------

@pytest.fixture
def engine(monkeypatch):
    engine = FakeEngine()
    engine.run_handler = lambda spec: RunResult(0, '{"golden": {"ok": true}}\n', "")
    monkeypatch.setattr("coldchain.cli.base.connect", lambda: engine)
    monkeypatch.setattr("coldchain.steps.infer.ensure_images", lambda *args, **kwargs: IMAGE)
    monkeypatch.setattr("coldchain.steps.infer.runtimes_image", lambda *args, **kwargs: IMAGE)
    monkeypatch.setattr("coldchain.steps.convert.runtimes_image", lambda *args, **kwargs: IMAGE)
    monkeypatch.setattr("coldchain.environments.images.build_images", lambda *args, **kwargs: [IMAGE])
    monkeypatch.setattr("coldchain.steps.diagnose.image_for", lambda *args, **kwargs: Image.of(IMAGE))
    return engine


def run_cli(*args: str):
    return CliRunner().invoke(main, [args[0], "--project", str(ROOT), *args[1:]], catch_exceptions=False)


def model_mounts(engine: FakeEngine) -> list[tuple[Path, str]]:
    """Per container: the folder mounted at /model, and what follows --model (doctor: its first argument)."""
    found = []
    for spec in engine.runs:
        (source,) = [mount.source for mount in spec.mounts if mount.target == "/model"]
        arguments = spec.command[3:]
        found.append((source, arguments[arguments.index("--model") + 1] if "--model" in arguments else arguments[0]))
    return found


@pytest.mark.parametrize("runtime", ["tensorflow", "onnxruntime", "openvino", "fastest"])
def test_infer_takes_the_model_file_for_its_directory(engine, model_dir, tmp_path, runtime):
    result = run_cli("infer", "--model", str(model_dir / "model.pb"), "--output", str(tmp_path / "p.jsonl"),
                       "--input", str(tmp_path), "--runtime", runtime, "--no-golden-cache")
    assert result.exit_code == 0, result.output
    conversions = {"tensorflow": 0, "onnxruntime": 1, "openvino": 1, "fastest": 2}[runtime]
    assert model_mounts(engine) == [(model_dir, "/model")] * (conversions + 1)


def test_convert_takes_the_model_file_for_its_directory(engine, model_dir):
    result = run_cli("convert", str(model_dir / "model.pb"), "--runtime", "openvino")
    assert result.exit_code == 0, result.output
    assert model_mounts(engine) == [(model_dir, "/model")]
    assert (model_dir / "converted" / "openvino").is_dir()


@pytest.mark.parametrize("command", [("doctor",), ("reexport", "--out", "OUT")])
def test_doctor_and_reexport_mount_the_models_directory(engine, model_dir, bare_graph, tmp_path, command):
    for model in (model_dir / "model.pb", bare_graph):
        arguments = [str(tmp_path / "again") if part == "OUT" else part for part in command[1:]]
        result = run_cli(command[0], str(model), *arguments)
        assert result.exit_code == 0, result.output
    assert model_mounts(engine) == [(model_dir, "/model/model.pb"), (bare_graph.parent, "/model/frozen.pb")]


def test_infer_without_a_manifest_names_the_folder_before_any_container(engine, bare_graph, tmp_path):
    result = run_cli("infer", "--model", str(bare_graph), "--output", str(tmp_path / "p.jsonl"),
                       "--input", str(tmp_path))
    assert result.exit_code == Exit.USAGE
    assert f"{bare_graph.parent} has no manifest.json" in result.output
    assert f"coldchain adopt {bare_graph} --out DIR" in " ".join(result.output.split())
    assert engine.runs == []


def test_drift_test_takes_the_model_file_for_its_directory(engine, model_dir, tmp_path, monkeypatch):
    from coldchain.environments.matrix import DEFAULT_VARIANT, load_matrix
    from coldchain.drift.options import DriftOptions
    from coldchain.drift.variants import make_variants

    seen = []

    def stop(engine, project, matrix, options):
        seen.append(options.model)
        raise UsageError("stopped here by the test")

    monkeypatch.setattr("coldchain.drift.runner.run_drift_test", stop)
    result = run_cli("drift-test", "--model", str(model_dir / "model.pb"), "--out", str(tmp_path / "drift"))
    assert result.exit_code == Exit.USAGE and "stopped here by the test" in result.output
    assert seen == [model_dir]
    options = DriftOptions(model=model_dir / "model.pb", run=None, out=tmp_path / "drift")
    matrix = load_matrix(ROOT / "drift" / "matrix.toml")
    assert make_variants(engine, None, matrix, options, {DEFAULT_VARIANT}, {}) == {DEFAULT_VARIANT: model_dir}


@pytest.mark.parametrize("command", [("drift-plan",), ("images-save", "--out", "ARCHIVE"), ("images-load", "ARCHIVE"),
                                     ("images-push", "localhost:5000"), ("images-pull", "ARCHIVE")])
def test_the_matrix_commands_read_the_model_files_directory(engine, model_dir, tmp_path, monkeypatch, command):
    import coldchain.drift.runner

    seen = []
    real = coldchain.drift.runner.with_model_environment
    monkeypatch.setattr(coldchain.drift.runner, "with_model_environment",
                        lambda matrix, model: seen.append(model) or real(matrix, model))
    for name in ("resolve", "save", "load", "push", "pull"):
        monkeypatch.setattr(f"coldchain.drift.transfer.{name}", lambda *args, **kwargs: [])
    monkeypatch.setattr("coldchain.cli.transfer._transferred", lambda result, as_json: None)
    archive = tmp_path / "images.tar"
    archive.write_text("")
    arguments = [str(archive) if part == "ARCHIVE" else part for part in command]
    result = run_cli(*arguments, "--model", str(model_dir / "model.pb"))
    assert result.exit_code == 0, result.output
    assert seen == [model_dir]


def test_adopt_mounts_the_graphs_folder(engine, bare_graph, tmp_path, monkeypatch):
    result = run_cli("adopt", str(bare_graph), "--out", str(tmp_path / "adopted"))
    assert result.exit_code == 0, result.output
    assert model_mounts(engine) == [(bare_graph.parent, "/model/frozen.pb")]
