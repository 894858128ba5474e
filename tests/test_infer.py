"""infer on the host, against the fake engine: without --output each image's top 5 printed as
label_image prints it (the scratch predictions file removed), with --output the file and the summary
as before; images named as arguments, an image file mounted by its folder; the options the host passes
on to the container in step with the container's parser."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from coldchain import contract
from coldchain.cli import main
from coldchain.config import IMAGES, Project
from coldchain.contract import Exit
from coldchain.engine import ImageInfo, RunResult
from coldchain.environments.bases import ResolvedBase
from coldchain.environments.images import BuiltImage
from coldchain.steps.infer import VALUE_OPTIONS, split_images
from coldchain.steps.label_image import render
from conftest import ROOT
from fake_engine import FakeEngine

IMAGE = BuiltImage(IMAGES["infer-cpu"], "t-infer:cpu", ImageInfo("sha256:abc", ("t-infer:cpu",), {}, 1),
                   ResolvedBase("b", "sha256:b", "local", "3.11.2"), False)
SUMMARY = {"golden": {"ok": True}, "images": 2, "seconds": 0.25, "startup": {"container_process_s": 1.0}}


@pytest.fixture
def project(tmp_path) -> Project:
    """A checkout of its own: the scratch predictions go under its build/."""
    root = tmp_path / "checkout"
    (root / "coldchain").mkdir(parents=True)
    (root / "requirements.in").write_text("")
    return Project(root)


@pytest.fixture
def model(tmp_path) -> Path:
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "model.pb").write_bytes(b"graph")
    (directory / "manifest.json").write_text(json.dumps({"model": {"file": "model.pb", "sha256": "ab" * 32}}))
    return directory


@pytest.fixture
def pictures(tmp_path) -> Path:
    directory = tmp_path / "pictures"
    directory.mkdir()
    for name in ("cat.jpg", "dog.png"):
        (directory / name).write_bytes(b"image")
    return directory


def rows_for(pictures: Path) -> list[dict]:
    return [{"path": str(pictures / "cat.jpg"), "top_k": [{"label": "tabby", "probability": 0.812345},
                                                         {"label": "tiger cat", "probability": 0.1}]},
            {"path": str(pictures / "dog.png"), "top_k": [{"label": "beagle", "probability": 0.5},
                                                         {"label": "basset", "probability": 0.25}]}]


@pytest.fixture
def engine(monkeypatch, pictures):
    """A container that writes its predictions (JSON lines, or CSV when told --format csv) where the
    staged output is mounted, and prints its summary."""
    engine = FakeEngine()
    engine.written = None

    def container(spec):
        arguments = list(spec.command[3:])
        (staging,) = [mount.source for mount in spec.mounts if mount.target == contract.MOUNT_OUT]
        fmt = [arguments[index + 1] for index, word in enumerate(arguments) if word == "--format"][-1]  # last wins
        rows = rows_for(pictures)
        if "--golden-only" not in arguments:
            text = "".join(json.dumps(row) + "\n" for row in rows) if fmt == "jsonl" else \
                "path,label_1,probability_1\n" + "".join(f"{row['path']},{row['top_k'][0]['label']},"
                                                         f"{row['top_k'][0]['probability']}\n" for row in rows)
            engine.written = text
            (staging / Path(arguments[arguments.index("--output") + 1]).name).write_text(text)
        return RunResult(0, json.dumps(SUMMARY) + "\n", "")

    engine.run_handler = container
    monkeypatch.setattr("coldchain.cli.base.connect", lambda: engine)
    monkeypatch.setattr("coldchain.steps.infer.ensure_images", lambda *args, **kwargs: IMAGE)
    return engine


def infer(project: Project, *args: str):
    return CliRunner().invoke(main, ["infer", "--project", str(project.root), "--no-golden-cache", *args],
                              catch_exceptions=False)


def is_the_summary(stdout: str) -> bool:
    """The container's summary, its start-up completed with the host's share of the wait, and the threads
    the host chose with their source."""
    summary = json.loads(stdout)
    host_keys = ("startup", "signature", "threads")  # the host completes the start-up, says whether the model was
    # verified and which threads it chose with their source
    return {key: value for key, value in summary.items() if key not in host_keys} == \
        {key: value for key, value in SUMMARY.items() if key not in host_keys} and "total_s" in summary["startup"] \
        and summary["signature"] == "not verified" and \
        summary["threads"]["source"] in ("measured-here", "tensorflow-default")


def test_without_output_each_images_top_k_is_printed_as_label_image_does(engine, project, model, pictures, caplog):
    result = infer(project, "--model", str(model), str(pictures))
    assert result.exit_code == 0, result.output
    assert "infer: 2 images in 0.25 s; " in caplog.text  # the summary's gist, logged (stderr)
    assert result.stdout == (f"{pictures / 'cat.jpg'}\n  tabby (0.81234)\n  tiger cat (0.10000)\n\n"
                             f"{pictures / 'dog.png'}\n  beagle (0.50000)\n  basset (0.25000)\n")
    assert "golden" not in result.stdout  # the summary is not data here: only logged
    arguments = engine.runs[0].command[3:]
    assert arguments[arguments.index("--output") + 1] == f"{contract.MOUNT_OUT}/predictions.jsonl"
    assert list((project.build_dir).iterdir()) == []  # the scratch predictions are gone


def test_with_output_the_file_is_written_and_the_summary_printed(engine, project, model, pictures, tmp_path):
    output = tmp_path / "p.jsonl"
    result = infer(project, "--model", str(model), "--input", str(pictures), "--output", str(output))
    assert result.exit_code == 0, result.output
    assert is_the_summary(result.stdout)
    assert output.read_text() == engine.written
    assert not project.build_dir.exists()


def test_format_without_output_prints_the_predictions_in_that_format(engine, project, model, pictures):
    result = infer(project, "--model", str(model), str(pictures / "cat.jpg"), "--format", "csv")
    assert result.exit_code == 0, result.output
    assert result.stdout == engine.written and result.stdout.startswith("path,label_1,probability_1\n")


def test_golden_only_without_output_prints_the_summary(engine, project, model):
    result = infer(project, "--model", str(model), "--golden-only")
    assert result.exit_code == 0, result.output
    assert is_the_summary(result.stdout)


def test_no_images_is_refused_before_any_container(engine, project, model):
    result = infer(project, "--model", str(model))
    assert result.exit_code == Exit.USAGE and "no images to predict" in result.output
    assert engine.runs == []


def test_an_image_file_is_mounted_by_its_folder_and_passed_by_name(engine, project, model, pictures, tmp_path):
    result = infer(project, "--model", str(model), "--input", str(pictures), str(pictures / "dog.png"),
                   "--output", str(tmp_path / "p.jsonl"))
    assert result.exit_code == 0, result.output
    (spec,) = engine.runs
    inputs = {mount.target: (mount.source, mount.read_only) for mount in spec.mounts
              if mount.target.startswith(contract.MOUNT_INPUTS)}
    assert inputs == {f"{contract.MOUNT_INPUTS}/0": (pictures, True), f"{contract.MOUNT_INPUTS}/1": (pictures, True)}
    assert spec.command[-2:] == (f"{contract.MOUNT_INPUTS}/0", f"{contract.MOUNT_INPUTS}/1/dog.png")
    # The container names the file as the user knows it: its mount point maps to the folder.
    assert json.loads(spec.environment[contract.ENV_PATH_MAP])[f"{contract.MOUNT_INPUTS}/1"] == str(pictures)


def test_the_words_after_a_value_option_are_its_value_not_an_image():
    images, arguments = split_images(("a.jpg", "--top-k", "3", "--golden-only", "b", "--format=csv",
                                      "--on-bad-image", "skip", "c.png"))
    assert images == (Path("a.jpg"), Path("b"), Path("c.png"))
    assert arguments == ("--top-k", "3", "--golden-only", "--format=csv", "--on-bad-image", "skip")


def container_value_options() -> set[str]:
    """The options of the container's infer parser that take a value."""
    tree = ast.parse((ROOT / "scripts" / "incontainer" / "steps" / "infer.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument" and node.args:
            first = node.args[0]
            name = first.value if isinstance(first, ast.Constant) else getattr(contract, first.id)
            action = next((keyword.value.value for keyword in node.keywords if keyword.arg == "action"), None)
            if name.startswith("--") and action not in ("store_true", "store_false"):
                found.add(name)
    return found


def test_the_host_knows_every_container_option_that_takes_a_value():
    set_by_host = {"--model", "--output", contract.FLAG_RUNTIME, contract.FLAG_PRECISION, contract.FLAG_BF16_TOLERANCE,
                   contract.FLAG_GOLDEN_VERIFIED, contract.FLAG_ALLOW_OP, contract.FLAG_INTRA_OP_THREADS,
                   contract.FLAG_INTER_OP_THREADS, contract.FLAG_GOLDEN_BOUND}
    assert container_value_options() - set_by_host == set(VALUE_OPTIONS)


def test_label_image_blocks_follow_the_rows_order():
    assert render([{"path": "b.png", "top_k": [{"label": "x", "probability": 1}]},
                   {"path": "a.png", "top_k": []}]) == "b.png\n  x (1.00000)\n\na.png"


def test_with_trust_a_signed_model_is_verified_and_its_files_passed_to_the_container(engine, project, model, pictures,
                                                                                      tmp_path):
    from test_signing import make_key

    from coldchain.steps.signing import sign_directory

    private, public, _ = make_key(tmp_path, "maker")
    sign_directory(model, private)
    output = tmp_path / "p.jsonl"
    result = infer(project, "--model", str(model), "--input", str(pictures), "--output", str(output), "--trust",
                   str(public))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["signature"] == "verified: 2 files signed by the key in maker.pub"
    (run,) = engine.runs
    assert set(json.loads(run.environment[contract.ENV_SIGNED_FILES])) == {"model.pb", "manifest.json"}


def test_with_trust_a_tampered_model_is_refused_before_any_container(engine, project, model, pictures, tmp_path):
    from test_signing import make_key

    from coldchain.steps.signing import sign_directory

    private, public, _ = make_key(tmp_path, "maker")
    result = infer(project, "--model", str(model), "--input", str(pictures), "--trust", str(public))
    assert result.exit_code == Exit.USAGE and "model.sig: missing" in result.output  # unsigned
    sign_directory(model, private)
    (model / "model.pb").write_bytes(b"graph!")
    output = tmp_path / "p.jsonl"
    result = infer(project, "--model", str(model), "--input", str(pictures), "--output", str(output), "--trust",
                   str(public))
    assert result.exit_code == Exit.USAGE and "model.pb: changed after signing" in result.output
    assert engine.runs == [] and not output.exists()


def test_with_env_the_drift_environments_image_runs_the_model(engine, project, model, pictures, monkeypatch):
    """--env arm64: the image of that matrix environment (built from its own lock), not infer-cpu."""
    (project.root / "drift").mkdir()
    shutil.copyfile(ROOT / "drift" / "matrix.toml", project.root / "drift" / "matrix.toml")
    asked = []
    monkeypatch.setattr("coldchain.steps.infer.ensure_image",
                        lambda engine, project, spec, options: asked.append(spec) or IMAGE)
    result = infer(project, "--env", "arm64", "--model", str(model), "--output", str(project.root / "p.jsonl"),
                   str(pictures))
    assert result.exit_code == 0, result.output
    assert [(spec.lock, spec.base, spec.env) for spec in asked] == [("drift-arm64", "bookworm-arm64", "arm64")]


def test_env_with_another_runtime_is_refused(engine, project, model, pictures):
    result = CliRunner().invoke(main, ["infer", "--project", str(project.root), "--env", "arm64", "--runtime",
                                       "onnxruntime", "--model", str(model), str(pictures)])
    assert result.exit_code == Exit.USAGE and "--env arm64 runs TensorFlow" in result.output
