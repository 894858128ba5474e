"""The `coldchain` command. The only place where errors become messages and exit codes."""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path

import click

from . import options
from .config import BASES, IMAGES, KIT_LABEL, LOCKS, RUN_LABEL, Project
from .errors import ColdchainError

log = logging.getLogger("coldchain")


def _setup_logging(verbose: int, quiet: int) -> None:
    level = logging.INFO - 10 * verbose + 10 * quiet
    logging.basicConfig(level=max(level, logging.DEBUG), stream=sys.stderr, format="coldchain: %(message)s")


def command(function):
    """Shared plumbing: logging flags, project discovery, and turning ColdchainError into an exit code."""

    @options.verbose
    @options.quiet
    @options.project
    @functools.wraps(function)
    def wrapper(verbose: int, quiet: int, project: Path | None, **kwargs):
        _setup_logging(verbose, quiet)
        try:
            return function(Project.find(project), **kwargs)
        except ColdchainError as error:
            click.echo(f"coldchain: error: {error.message}", err=True)
            if error.log_tail:
                click.echo("  --- log tail ---", err=True)
                click.echo("\n".join(f"  | {line}" for line in error.log_tail.splitlines()), err=True)
            if error.fix:
                click.echo(f"  fix: {error.fix}", err=True)
            sys.exit(error.exit_code)
        except KeyboardInterrupt:
            click.echo("coldchain: interrupted", err=True)
            sys.exit(130)

    return wrapper


def _engine():
    from .docker_engine import DockerEngine

    engine = DockerEngine()
    engine.ping()
    return engine


def _emit(data, as_json: bool, text: str) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        click.echo(text)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name=None, version=__import__("coldchain").__version__)
def main():
    """coldchain: a frozen ResNet v1 50 from the training container to the inference container,
    environment captured to the byte."""


@main.command("lock")
@options.lock_names
@options.upgrade
@command
def lock_command(project: Project, only: tuple[str, ...], upgrade: bool):
    """Resolve every requirements*.in into its hashed lock (pip-compile). Locks for another Python
    than this host's are resolved inside their base image, under that base's python3."""
    from .locks import compile_lock, host_python
    from .resolver import compile_lock_in_base

    for name in only or [n for n in LOCKS]:
        spec = LOCKS[name]
        log.info("resolving %s -> %s", spec.source, spec.lock)
        if spec.python == host_python():
            compile_lock(project, spec, upgrade=upgrade)
        else:
            compile_lock_in_base(_engine(), project, spec, upgrade=upgrade)


@main.command("lock-check")
@options.json_output
@command
def lock_check_command(project: Project, as_json: bool):
    """Fail, naming the file, when a lock is stale, unhashed, or disagrees with its partner."""
    from .locks import check_all

    locks = check_all(project)
    summary = {name: {"lock": str(lock.path.relative_to(project.root)), "sha256": lock.sha256,
                      "packages": len(lock.pins)} for name, lock in locks.items()}
    _emit(summary, as_json, "\n".join(f"ok  {v['lock']}  ({v['packages']} pins)" for v in summary.values()))


@main.command("wheels")
@options.lock_names
@command
def wheels_command(project: Project, only: tuple[str, ...]):
    """Fetch and verify the wheels each image lock pins."""
    from .locks import check_all
    from .wheelhouse import Wheelhouse

    names = only or [spec.lock for spec in IMAGES.values()]
    for name in dict.fromkeys(names):
        lock = check_all(project, [name])[name]
        wheels = Wheelhouse(project, BASES["bookworm"]).ensure(LOCKS[name], lock)
        log.info("%s: %d wheels verified", LOCKS[name].lock, len(wheels))


@main.command("base")
@options.suite
@options.base_image
@options.no_pull
@options.json_output
@command
def base_command(project: Project, suite: str, base_image: str | None, no_pull: bool, as_json: bool):
    """Make sure the base image exists: pulled where a registry answers, else built locally."""
    from .base import resolve_base

    resolved = resolve_base(_engine(), project, BASES[suite], base_image, allow_pull=not no_pull)
    _emit(resolved.__dict__, as_json, f"{resolved.ref}  {resolved.image_id}  ({resolved.source}, "
                                      f"Python {resolved.python_version})")


@main.command("images")
@options.image_names
@options.device
@options.prefix
@options.base_image
@options.no_pull
@options.force
@options.keep_build_stages
@options.json_output
@command
def images_command(project: Project, images: tuple[str, ...], device: str, prefix: str,
                   base_image: str | None, no_pull: bool, force: bool, keep_build_stages: bool, as_json: bool):
    """Build the train and infer images for a device from their locks."""
    from .images import BuildOptions, build_images

    engine = _engine()
    chosen = images or tuple(name for name, spec in IMAGES.items() if spec.device == device)
    build_options = BuildOptions(prefix=prefix, base_image=base_image, allow_pull=not no_pull, force=force,
                                 keep_stages=keep_build_stages)
    results = []
    for built in build_images(engine, project, [IMAGES[name] for name in chosen], build_options):
        results.append({"image": built.spec.name, "tag": built.tag, "id": built.info.id, "size": built.info.size,
                        "reused": built.reused, "base": built.base.ref, "labels": built.info.labels})
    _emit(results, as_json, "\n".join(f"{r['tag']}  {r['id'][:19]}  {r['size'] / 1e9:.2f} GB"
                                      f"{'  (up to date)' if r['reused'] else ''}" for r in results))


def _step(project: Project, name: str, role: str, module: str, output: Path, inputs: dict, extra, *,
          device: str, memory: str, prefix: str) -> str:
    from .pipeline import StepConfig, ensure_images, run_step

    engine = _engine()
    image = ensure_images(engine, project, role, device, prefix)
    step = StepConfig(name=name, role=role, module=module, output=output.resolve(), inputs=inputs,
                      arguments=tuple(extra), device=device, memory=memory, prefix=prefix)
    return run_step(engine, project, step, image)


def step_command(name: str):
    """The options every containerised step shares; arguments the host does not know go to the container."""
    def decorate(function):
        for option in (command, options.passthrough, options.prefix, options.memory, options.device):
            function = option(function)
        return main.command(name, context_settings={"ignore_unknown_options": True})(function)
    return decorate


@step_command("data")
@options.out_dir
def data_command(project: Project, out: Path, device: str, memory: str, prefix: str, extra):
    """Generate the default dataset (deterministic from --seed, with a held-out split).
    Extra arguments go to incontainer.make_data (e.g. --seed 1 --classes 5)."""
    _step(project, "data", "train", "make_data", out, {}, extra, device=device, memory=memory, prefix=prefix)
    log.info("dataset written to %s", out)


@step_command("train")
@options.data_dir
@options.out_dir
@options.checkpoint
def train_command(project: Project, data: Path, out: Path, checkpoint_path: Path | None, device: str, memory: str,
                  prefix: str, extra):
    """Train (or, with --checkpoint-path, fine-tune) ResNet v1 50 in the training container.
    Extra arguments go to incontainer.train (e.g. --max-steps 300 --image-size 64)."""
    inputs = {"/data": data.resolve()}
    arguments = ["--data", "/data", *extra]
    if checkpoint_path is not None:
        source = checkpoint_path.resolve()
        # A checkpoint prefix names several files: mount their directory, point at the prefix.
        directory = source if source.is_dir() else source.parent
        inputs["/checkpoint"] = directory
        arguments += ["--checkpoint-path", "/checkpoint" if source.is_dir() else f"/checkpoint/{source.name}"]
        if not directory.exists():
            from .errors import UsageError

            raise UsageError(f"{checkpoint_path}: checkpoint not found", fix="pass a checkpoint file prefix or directory")
    _step(project, "train", "train", "train", out, inputs, arguments, device=device, memory=memory, prefix=prefix)
    metrics = out / "metrics.json"
    if metrics.exists():
        click.echo(metrics.read_text().strip())


@step_command("freeze")
@options.run_dir
@options.out_dir
def freeze_command(project: Project, run: Path, out: Path, device: str, memory: str, prefix: str, extra):
    """Freeze a training run into model.pb + manifest.json + golden.npz, in the training container."""
    from .bench import recommended_threads

    threads = [] if any(arg.startswith("--threads") for arg in extra) else ["--threads", recommended_threads(project)]
    _step(project, "freeze", "train", "freeze", out, {"/run": run.resolve()}, ["--run", "/run", *threads, *extra],
          device=device, memory=memory, prefix=prefix)
    log.info("frozen model written to %s", out)


@step_command("infer")
@options.model_dir
@click.option("--output", type=click.Path(path_type=Path), required=True, help="Predictions file (.jsonl or .csv).")
@click.option("--input", "inputs", multiple=True, required=True, type=click.Path(path_type=Path),
              help="An image file or a directory of images (repeatable).")
def infer_command(project: Project, model: Path, output: Path, inputs: tuple[Path, ...], device: str, memory: str,
                  prefix: str, extra):
    """Predict in the inference container (no network, read-only model), after checking the model's
    sha256, running pre-flight and the golden probe."""
    mounts = {f"/inputs/{index}": path.resolve() for index, path in enumerate(inputs)}
    fmt = ["--format", "csv"] if output.suffix == ".csv" else ["--format", "jsonl"]
    summary = _step(project, "infer", "infer", "infer", output, {"/model": model.resolve(), **mounts},
                    ["--model", "/model", *fmt, *extra, *mounts], device=device, memory=memory, prefix=prefix)
    click.echo(summary.strip())


@main.command("drift-test")
@options.matrix
@click.option("--model", type=click.Path(path_type=Path), default=Path("out/model"), show_default=True,
              help="The frozen model every environment must load (make freeze).")
@click.option("--run", "run", type=click.Path(path_type=Path), default=Path("out/run"), show_default=True,
              help="The training run the model variants are re-frozen from (make train).")
@click.option("--out", "out", type=click.Path(path_type=Path), default=Path("out/drift"), show_default=True,
              help="Report directory (JSON, Markdown, JUnit XML, heatmap PNG; variants in models/).")
@options.cases
@options.jobs
@options.memory
@options.prefix
@options.json_output
@command
def drift_test_command(project: Project, matrix_path: Path, model: Path, run: Path, out: Path, cases: tuple[str, ...],
                       jobs: int, memory: str, prefix: str, as_json: bool):
    """Run the frozen model in every environment of the drift matrix; fail unless every outcome is the
    expected one. Exit 0: all as expected; 1: some case unexpected."""
    import os
    import uuid

    from .drift import DriftOptions, default_jobs, heatmap_image, render_heatmap, run_drift_test
    from .matrix import load_matrix
    from .report import write_reports

    matrix = load_matrix(matrix_path if matrix_path.is_absolute() else project.root / matrix_path).select(cases)
    engine = _engine()
    run_id = f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    drift_options = DriftOptions(model=model, run=run, out=out, prefix=prefix, run_id=run_id,
                                 jobs=jobs or default_jobs(), memory=memory)
    try:
        report = run_drift_test(engine, project, matrix, drift_options)
    finally:
        engine.remove_containers(f"{RUN_LABEL}={run_id}")  # Ctrl-C or a crash leaves nothing running
    paths = write_reports(report, out)
    paths["heatmap"] = render_heatmap(engine, project, paths["json"], heatmap_image(engine, project, drift_options),
                                      drift_options)
    for kind, path in paths.items():
        log.info("%s report: %s", kind, path)
    counts = report["counts"]
    _emit(report, as_json, f"drift test: {counts['as_expected']}/{counts['cases']} cases as expected"
                           + ("" if report["ok"] else f"; {counts['unexpected']} UNEXPECTED (see {paths['markdown']})"))
    if not report["ok"]:
        sys.exit(1)


@main.command("doctor")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--manifest", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="manifest.json (default: the one beside the model).")
@click.option("--env", "env_name", default=None, help="Diagnose for this drift-matrix environment's runtime.")
@click.option("--image", "image_tag", default=None, help="Diagnose for the runtime in this image.")
@click.option("--load-op-libraries", is_flag=True, help="Load the model's shipped custom-op libraries (runs their code).")
@click.option("--allow-soft-placement", is_flag=True, help="Treat device pins as warnings.")
@options.matrix
@options.prefix
@options.json_output
@command
def doctor_command(project: Project, model: Path, manifest: Path | None, env_name: str | None, image_tag: str | None,
                   load_op_libraries: bool, allow_soft_placement: bool, matrix_path: Path, prefix: str, as_json: bool):
    """List every problem that would stop a TensorFlow runtime from loading or running MODEL (a
    model.pb or its directory), with cause and fix. Runs incontainer.doctor in the inference image
    (or --env/--image); outside coldchain, `python -m incontainer.doctor` runs wherever TF imports.
    Exit 0: loadable; 3: blocking problems."""
    from .doctor import run_doctor

    code, text = run_doctor(_engine(), project, model, manifest=manifest, env_name=env_name, image_tag=image_tag,
                            matrix_path=matrix_path, prefix=prefix, load_op_libraries=load_op_libraries,
                            allow_soft_placement=allow_soft_placement, as_json=as_json)
    click.echo(text)
    sys.exit(code)


@main.command("bench")
@click.option("--device", "devices", multiple=True, type=click.Choice(["cpu", "cuda"]), default=["cpu"],
              show_default=True, help="Which images to measure (repeatable).")
@click.option("--no-cold", is_flag=True, help="Skip the cold (no layer cache) builds.")
@click.option("--no-images", is_flag=True, help="Skip the image build measurements.")
@click.option("--no-inference", is_flag=True, help="Skip the inference speed measurements.")
@click.option("--quick", is_flag=True, help="CI mode: tiny input, few repeats, no cold builds; checks the machinery "
                                           "and writes bench/results-quick.json, not the README's numbers.")
@click.option("--repeats", type=click.IntRange(1, 50), default=3, show_default=True,
              help="Repeats of each build measurement.")
@click.option("--run", "run", type=click.Path(path_type=Path), default=Path("out/run"), show_default=True,
              help="Training run the benchmark models are frozen from.")
@options.prefix
@command
def bench_command(project: Project, devices: tuple[str, ...], no_cold: bool, no_images: bool, no_inference: bool,
                  quick: bool, repeats: int, run: Path, prefix: str):
    """Measure inference speed (TF with oneDNN on/off and a folded graph, against ONNX Runtime; batch
    1/8/32 at 224 px; roofline; threads; start to first prediction) and the kit's own costs (cold and
    warm builds, sizes); write bench/results.json."""
    from .bench import BenchOptions, InferenceBenchOptions, bench_images, bench_inference, drift_timing, write_results

    engine = _engine()
    results: dict = {}
    if not no_images:
        results.update(bench_images(engine, project, BenchOptions(devices=tuple(devices), cold=not (no_cold or quick),
                                                                  repeats=1 if quick else repeats, prefix=prefix)))
    if not no_inference:
        results["inference"] = {"quick" if quick else "full": bench_inference(engine, project, InferenceBenchOptions(
            run=run if run.is_absolute() else project.root / run, out=project.root / "out" / "bench",
            quick=quick, prefix=prefix))}
    results["drift_test"] = drift_timing(project)
    click.echo(write_results(project, results, "results-quick.json" if quick else "results.json"))


@main.command("clean")
@options.prefix
@click.option("--all", "everything", is_flag=True, help="Also remove base images and the wheelhouse.")
@command
def clean_command(project: Project, prefix: str, everything: bool):
    """Remove the kit's containers and images (found by label), and build leftovers."""
    import shutil

    engine = _engine()
    removed = engine.remove_containers(KIT_LABEL)
    images = [image for image in engine.list_images(KIT_LABEL)
              if everything or "io.coldchain.role" in image.labels]
    for image in images:
        engine.remove_image(image.id)
    shutil.rmtree(project.build_dir, ignore_errors=True)
    if everything:
        shutil.rmtree(project.wheelhouse, ignore_errors=True)
    log.info("removed %d containers and %d images", removed, len(images))


if __name__ == "__main__":
    main()
