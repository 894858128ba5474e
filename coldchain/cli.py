"""The `coldchain` command. The only place where errors become messages and exit codes (the table is
contract.Exit, shared with the containers)."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
import traceback
import uuid
from pathlib import Path

import click

from . import __version__, options
from .config import BASES, IMAGES, KIT_LABEL, LOCKS, RUN_LABEL, Project
from .contract import (EXIT_MEANINGS, FLAG_BF16_TOLERANCE, FLAG_PRECISION, FLAG_RUNTIME, MOUNT_CHECKPOINT, MOUNT_DATA,
                       MOUNT_INPUTS, MOUNT_MODEL, MOUNT_RUN, RUN_METRICS_FILE, RUNTIME_FASTEST, RUNTIME_TENSORFLOW,
                       CONVERTED_RUNTIMES, FLAG_GOLDEN_VERIFIED, MOUNT_GOLDEN_VERIFIED, STARTUP_KEY,
                       Exit, error_line, seconds_since_process_start)
from .errors import ColdchainError, UsageError

log = logging.getLogger("coldchain")
TRAIN_TIMEOUT_S = 4 * 3600.0
STEP_TIMEOUT_S = 1800.0


def _setup_logging(verbose: int, quiet: int) -> None:
    level = logging.INFO - 10 * verbose + 10 * quiet
    logging.basicConfig(level=max(level, logging.DEBUG), stream=sys.stderr, format="coldchain: %(message)s")


def _report(error: ColdchainError) -> None:
    click.echo(error_line(error.message), err=True)
    if error.log_tail:
        click.echo("  --- log tail ---", err=True)
        click.echo("\n".join(f"  | {line}" for line in error.log_tail.splitlines()), err=True)
    if error.fix:
        click.echo(f"  fix: {error.fix}", err=True)


def command(function):
    """Shared plumbing: logging flags, project discovery, and every failure as one message and its code."""

    @options.verbose
    @options.quiet
    @options.project
    @functools.wraps(function)
    def wrapper(verbose: int, quiet: int, project: Path | None, **kwargs):
        _setup_logging(verbose, quiet)
        try:
            return function(Project.find(project), **kwargs)
        except ColdchainError as error:
            _report(error)
            sys.exit(error.exit_code)
        except KeyboardInterrupt:
            click.echo("coldchain: interrupted", err=True)
            sys.exit(Exit.INTERRUPTED)
        except Exception as error:  # noqa: BLE001 - a bug must still end in one line, not a traceback
            if verbose:
                traceback.print_exc()
            click.echo(error_line(f"internal error: {type(error).__name__}: {error}"), err=True)
            click.echo("  fix: this is a coldchain bug; rerun with -v for the traceback and report it", err=True)
            sys.exit(Exit.INTERNAL)

    return wrapper


def _engine():
    from .engine.docker import DockerEngine

    engine = DockerEngine()
    engine.ping()
    return engine


def _emit(data, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True) if as_json else text)


EPILOG = "Exit codes: " + "; ".join(f"{code} {meaning}" for code, meaning in sorted(EXIT_MEANINGS.items()))


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
@click.version_option(package_name=None, version=__version__)
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
    from .environments.locks import compile_lock, host_python
    from .environments.resolver import compile_lock_in_base

    for name in only or list(LOCKS):
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
    from .environments.locks import check_all

    locks = check_all(project)
    summary = {name: {"lock": str(lock.path.relative_to(project.root)), "sha256": lock.sha256,
                      "packages": len(lock.pins)} for name, lock in locks.items()}
    _emit(summary, as_json, "\n".join(f"ok  {v['lock']}  ({v['packages']} pins)" for v in summary.values()))


@main.command("wheels")
@options.lock_names
@command
def wheels_command(project: Project, only: tuple[str, ...]):
    """Fetch and verify the wheels each image lock pins."""
    from .environments.locks import check_all
    from .environments.wheelhouse import Wheelhouse

    names = only or [spec.lock for spec in IMAGES.values()]
    for name in dict.fromkeys(names):
        lock = check_all(project, [name])[name]
        wheels = Wheelhouse(project, BASES[LOCKS[name].base]).ensure(LOCKS[name], lock)
        log.info("%s: %d wheels verified", LOCKS[name].lock, len(wheels))


@main.command("base")
@options.suite
@options.base_image
@options.no_pull
@options.json_output
@command
def base_command(project: Project, suite: str, base_image: str | None, no_pull: bool, as_json: bool):
    """Make sure the base image exists: pulled where a registry answers, else built locally."""
    from .environments.bases import resolve_base

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
    from .environments.images import BuildOptions, build_images

    chosen = images or tuple(name for name, spec in IMAGES.items() if spec.device == device)
    build_options = BuildOptions(prefix=prefix, base_image=base_image, allow_pull=not no_pull, force=force,
                                 keep_stages=keep_build_stages)
    results = []
    for built in build_images(_engine(), project, [IMAGES[name] for name in chosen], build_options):
        results.append({"image": built.spec.name, "tag": built.tag, "id": built.info.id, "size": built.info.size,
                        "reused": built.reused, "base": built.base.ref, "labels": built.info.labels})
    _emit(results, as_json, "\n".join(f"{r['tag']}  {r['id'][:19]}  {r['size'] / 1e9:.2f} GB"
                                      f"{'  (up to date)' if r['reused'] else ''}" for r in results))


def _step(project: Project, name: str, role: str, output: Path, inputs: dict, extra, *, device: str, memory: str,
          prefix: str, timeout_s: float | None, module: str | None = None) -> str:
    from .steps.pipeline import StepConfig, ensure_images, run_step

    engine = _engine()
    image = ensure_images(engine, project, role, device, prefix)
    default = TRAIN_TIMEOUT_S if name == "train" else STEP_TIMEOUT_S
    step = StepConfig(name=name, role=role, module=module or name, output=output.resolve(), inputs=inputs,
                      arguments=tuple(extra), device=device, memory=memory, prefix=prefix,
                      timeout_s=timeout_s or default)
    return run_step(engine, project, step, image)


def _with_startup(stdout: str, entered: float | None, timing: dict, started: float) -> str:
    """infer's summary with the host's share of the start-up added to the container's phases
    (contract.STARTUP_PHASES): what the user waits for, from typing the command to its output."""
    try:
        summary = json.loads(stdout)
    except ValueError:
        return stdout.strip()
    inside = summary.get(STARTUP_KEY)
    if not isinstance(inside, dict) or entered is None or "container" not in timing:
        return stdout.strip()
    process = inside.get("container_process_s") or 0.0
    inside.update(host_cli_s=round(entered, 3), host_checks_s=round(timing["checks"], 3),
                  # docker's create, start and exit around the process; then removal and the output's move
                  container_start_s=round(max(0.0, timing["container"] - process), 3),
                  finish_s=round(max(0.0, timing["step"] - timing["container"]), 3),
                  total_s=round(entered + time.perf_counter() - started, 3))
    return json.dumps(summary, sort_keys=True)


def step_command(name: str):
    """The options every containerised step shares; arguments the host does not know go to the container."""
    def decorate(function):
        for option in (command, options.passthrough, options.timeout, options.prefix, options.memory, options.device):
            function = option(function)
        return main.command(name, context_settings={"ignore_unknown_options": True})(function)
    return decorate


@step_command("data")
@options.out_dir
def data_command(project: Project, out: Path, device: str, memory: str, prefix: str, timeout_s, extra):
    """Generate the default dataset (deterministic from --seed, with a held-out split).
    Extra arguments go to the container's make_data (e.g. --seed 1 --classes 5)."""
    _step(project, "data", "train", out, {}, extra, device=device, memory=memory, prefix=prefix, timeout_s=timeout_s)
    log.info("dataset written to %s", out)


@step_command("train")
@options.data_dir
@options.out_dir
@options.checkpoint
def train_command(project: Project, data: Path, out: Path, checkpoint_path: Path | None, device: str, memory: str,
                  prefix: str, timeout_s, extra):
    """Train (or, with --checkpoint-path, fine-tune) ResNet v1 50 in the training container.
    Extra arguments go to the container's train step (e.g. --max-steps 300 --image-size 64
    --numerics portable --preprocessing vgg); `python -m incontainer.steps.train --help` lists them."""
    inputs = {MOUNT_DATA: data.resolve()}
    arguments = ["--data", MOUNT_DATA, *extra]
    if checkpoint_path is not None:
        source = checkpoint_path.resolve()
        # A checkpoint prefix names several files: mount their directory, point at the prefix.
        directory = source if source.is_dir() else source.parent
        if not directory.exists():
            raise UsageError(f"{checkpoint_path}: checkpoint not found", fix="pass a checkpoint file prefix or directory")
        inputs[MOUNT_CHECKPOINT] = directory
        arguments += ["--checkpoint-path", MOUNT_CHECKPOINT if source.is_dir() else f"{MOUNT_CHECKPOINT}/{source.name}"]
    _step(project, "train", "train", out, inputs, arguments, device=device, memory=memory, prefix=prefix,
          timeout_s=timeout_s)
    metrics = out / RUN_METRICS_FILE
    if metrics.exists():
        click.echo(metrics.read_text().strip())


@step_command("freeze")
@options.run_dir
@options.out_dir
def freeze_command(project: Project, run: Path, out: Path, device: str, memory: str, prefix: str, timeout_s, extra):
    """Freeze a training run into model.pb + manifest.json + golden.npz, in the training container."""
    from .steps.threads import recommended_threads

    threads = [] if any(arg.startswith("--threads") for arg in extra) else ["--threads", recommended_threads(project)]
    _step(project, "freeze", "train", out, {MOUNT_RUN: run.resolve()}, ["--run", MOUNT_RUN, *threads, *extra],
          device=device, memory=memory, prefix=prefix, timeout_s=timeout_s)
    log.info("frozen model written to %s", out)


@step_command("infer")
@options.model_dir
@options.output_file
@options.inputs
@options.runtime
@options.precision
@options.bf16_tolerance
@options.golden_cache
def infer_command(project: Project, model: Path, output: Path, inputs: tuple[Path, ...], runtime: str, precision: str,
                  bf16_tolerance: float, golden_cache: bool, device: str, memory: str, prefix: str, timeout_s, extra):
    """Predict in the inference container (no network, read-only model), after checking the model's
    sha256, its manifest, the runtime (doctor) and the golden probe. With --runtime onnxruntime or
    openvino, in the runtimes image, on the model's conversion (made or remade first when missing or
    stale); the summary records the precision the runtime reports it computed in. With --runtime
    fastest, every runtime able to compute at --precision is golden-checked and timed, and the fastest
    that passed predicts (runtime_choice in the summary says which and why). A golden check this model
    passed in this image is kept (build/golden-checks) and used instead of the probe while the model,
    image and effective numerics stay the same; the summary's startup breaks the wait down."""
    from .steps.golden_cache import cache_file, remember
    from .steps.model_argument import model_directory
    from .steps.pipeline import StepConfig, ensure_images, run_step

    entered, started, timing = seconds_since_process_start(), time.perf_counter(), {}
    mounts = {f"{MOUNT_INPUTS}/{index}": path.resolve() for index, path in enumerate(inputs)}
    fmt = ["--format", "csv"] if output.suffix == ".csv" else ["--format", "jsonl"]
    source = model_directory(model)  # before the daemon: a wrong path is named at once
    if runtime != RUNTIME_TENSORFLOW and device != "cpu":
        raise UsageError(f"--runtime {runtime} runs on the CPU here", fix="drop --device cuda")
    engine = _engine()
    if runtime == RUNTIME_TENSORFLOW:
        image, role = ensure_images(engine, project, "infer", device, prefix), "infer"
    else:
        from .steps.convert import ensure_converted, runtimes_image

        image, role = runtimes_image(engine, project, prefix), "runtimes"
        for converted in (CONVERTED_RUNTIMES if runtime == RUNTIME_FASTEST else (runtime,)):
            ensure_converted(engine, project, source, converted, image, memory=memory, prefix=prefix,
                             timeout_s=timeout_s)
    kept = None
    if golden_cache and runtime != RUNTIME_FASTEST:
        kept = cache_file(project, source, image.info.id,
                          {"name": runtime, "precision": precision, "bf16_tolerance": bf16_tolerance})
    verified = {MOUNT_GOLDEN_VERIFIED: kept} if kept is not None and kept.is_file() else {}
    arguments = ["--model", MOUNT_MODEL, *fmt, FLAG_RUNTIME, runtime, FLAG_PRECISION, precision,
                 FLAG_BF16_TOLERANCE, str(bf16_tolerance),
                 *([FLAG_GOLDEN_VERIFIED, MOUNT_GOLDEN_VERIFIED] if verified else []), *extra, *mounts]
    step = StepConfig(name="infer", role=role, module="infer", output=output.resolve(),
                      inputs={MOUNT_MODEL: source, **verified, **mounts}, arguments=tuple(arguments),
                      device=device, memory=memory, prefix=prefix, timeout_s=timeout_s or STEP_TIMEOUT_S)
    timing["checks"] = time.perf_counter() - started
    mark = time.perf_counter()
    summary = run_step(engine, project, step, image, timing=timing)
    timing["step"] = time.perf_counter() - mark
    if kept is not None:
        try:
            remember(kept, json.loads(summary))
        except ValueError:
            pass  # not a summary (extra arguments asked for --help): nothing to keep
    click.echo(_with_startup(summary, entered, timing, started))


@step_command("convert")
@options.model_argument
@options.converted_runtime
def convert_command(project: Project, model: Path, runtime: str, device: str, memory: str, prefix: str, timeout_s,
                    extra):
    """Convert MODEL (a model directory, or the model.pb in it) for ONNX Runtime (tf2onnx) or OpenVINO (its
    TensorFlow frontend, saved as fp32 IR) into MODEL/converted/<runtime>/, in the runtimes image, with each
    file's sha256, the source model's sha256 and the converter versions in conversion.json. infer --runtime
    does this by itself when the conversion is missing or stale."""
    from .steps.convert import convert, runtimes_image

    if extra:
        raise UsageError(f"unexpected arguments: {' '.join(extra)}", fix="see coldchain convert --help")
    engine = _engine()
    click.echo(convert(engine, project, model, runtime, runtimes_image(engine, project, prefix), memory=memory,
                       prefix=prefix, timeout_s=timeout_s).strip())


@step_command("reexport")
@options.model_argument
@options.out_dir
@options.clear_devices
@options.strip_default_attrs
@options.with_env
@options.matrix
def reexport_command(project: Project, model: Path, out: Path, clear_devices: bool, strip_default_attrs: bool,
                     with_env: str | None, matrix_path: Path, device: str, memory: str, prefix: str, timeout_s, extra):
    """Write MODEL (a model directory or frozen graph file) out again with the standard fixes: device
    fields cleared, default-valued attributes stripped; the manifest's sha256 follows, the golden stays."""
    from .environments.images import BuildOptions, build_images
    from .steps.model_argument import EITHER, resolve_model
    from .steps.pipeline import StepConfig, run_step

    found = resolve_model(model, EITHER)
    arguments = ["--model", found.target] + (["--clear-devices"] if clear_devices else []) + \
        (["--strip-default-attrs"] if strip_default_attrs else []) + list(extra)
    engine = _engine()
    spec = IMAGES[f"infer-{device}"]
    if with_env:
        from .drift.matrix import known, load_matrix

        matrix = load_matrix(matrix_path if matrix_path.is_absolute() else project.root / matrix_path)
        spec = matrix.envs[known(matrix.path, "environment", with_env, matrix.envs, " (--with)")].image_spec()
    (image,) = build_images(engine, project, [spec], BuildOptions(prefix=prefix))
    step = StepConfig(name="reexport", role="infer", module="reexport", output=out.resolve(),
                      inputs={MOUNT_MODEL: found.directory}, arguments=tuple(arguments), device=device,
                      memory=memory, prefix=prefix, timeout_s=timeout_s or STEP_TIMEOUT_S)
    run_step(engine, project, step, image)
    log.info("re-exported model written to %s", out)


@main.command("adopt")
@options.model_argument
@options.adopt_out
@options.labels_file
@options.labels_offset
@options.own_images
@options.preprocessing
@options.preprocessing_fields
@options.graph_input
@options.graph_output
@options.graph_logits
@options.image_size
@options.op_library
@options.requirements
@options.python_version
@options.environment_name
@options.reference_image
@options.reference_env
@options.matrix
@options.memory
@options.prefix
@options.timeout
@command
def adopt_command(project: Project, model: Path, out: Path, labels: Path | None, labels_offset: int | None,
                  images: Path | None, preprocessing: str, preprocessing_fields: tuple[str, ...], graph_input: str | None,
                  graph_output: str | None, graph_logits: str | None, image_size: int | None,
                  op_libraries: tuple[Path, ...], requirements: Path | None, python: str | None, environment_name: str,
                  reference_image: str | None, reference_env: str | None, matrix_path: Path, memory: str, prefix: str,
                  timeout_s: float | None):
    """Adopt MODEL, a frozen graph made outside coldchain (slim's export_inference_graph.py, then
    freeze_graph), into a model directory that infer, doctor and drift-test take like the kit's own.
    The model's bytes are not changed; its manifest and golden outputs are computed in the reference
    environment: your own (--requirements), an image, a matrix environment, or the kit's training image."""
    from .steps.adopt import AdoptRequest, adopt

    arguments = ["--preprocessing", preprocessing]
    for field_value in preprocessing_fields:
        arguments += ["--preprocessing-field", field_value]
    for flag, value in (("--input", graph_input), ("--output", graph_output), ("--logits", graph_logits),
                        ("--image-size", image_size), ("--labels-offset", labels_offset)):
        if value is not None:
            arguments += [flag, str(value)]
    request = AdoptRequest(model=model, out=out, labels=labels, images=images, op_libraries=op_libraries,
                           requirements=requirements, python=python, environment_name=environment_name,
                           reference_image=reference_image, reference_env=reference_env, matrix_path=matrix_path,
                           arguments=tuple(arguments), prefix=prefix, memory=memory,
                           timeout_s=timeout_s or STEP_TIMEOUT_S)
    adopt(_engine(), project, request)
    log.info("adopted model written to %s: coldchain infer --model %s ..., coldchain doctor %s, make drift-test "
             "MODEL=%s", out, out, out, out)


@main.command("drift-test")
@options.matrix
@options.drift_model
@options.drift_run
@options.drift_out
@options.cases
@options.shard
@options.costs
@options.isolate
@options.jobs
@options.memory
@options.prefix
@options.json_output
@command
def drift_test_command(project: Project, matrix_path: Path, model: Path, run: Path | None, out: Path,
                       cases: tuple[str, ...], shard: str | None, costs: Path | None, isolate: bool, jobs: int,
                       memory: str, prefix: str, as_json: bool):
    """Run the model in every environment of the drift matrix; fail unless every outcome (and every
    expected finding) is the expected one. Exit 0: all as expected; 1: some case unexpected."""
    from .drift.report import write_reports
    from .drift.runner import DriftOptions, default_jobs, render_heatmap, run_drift_test
    from .drift.shards import parse_shard, shard_from_environment
    from .steps.model_argument import resolve_model

    matrix = _load_matrix(project, matrix_path, cases)
    chosen = parse_shard(shard) if shard else shard_from_environment(os.environ)
    model = resolve_model(model).spelled  # a model file stands for its directory; the report keeps the spelling
    if run is None and model.resolve() == (project.root / "out" / "model").resolve():
        run = project.root / "out" / "run"
    engine = _engine()
    run_id = f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    drift_options = DriftOptions(model=model, run=run, out=out, prefix=prefix, run_id=run_id,
                                 jobs=jobs or default_jobs(), memory=memory, shard=chosen, costs=costs,
                                 isolate=isolate)
    try:
        report = run_drift_test(engine, project, matrix, drift_options)
    finally:
        engine.remove_containers(f"{RUN_LABEL}={run_id}")  # Ctrl-C or a crash leaves nothing running
    paths = write_reports(report, out, chosen.suffix if chosen else "")
    if chosen is None:
        paths["heatmap"] = render_heatmap(engine, project, paths["json"], drift_options)
    _finish_drift(report, paths, as_json, f"shard {chosen}: " if chosen else "")


def _load_matrix(project: Project, matrix_path: Path, cases: tuple[str, ...] = ()):
    from .drift.matrix import load_matrix

    return load_matrix(matrix_path if matrix_path.is_absolute() else project.root / matrix_path).select(cases)


def _finish_drift(report: dict, paths: dict, as_json: bool, what: str) -> None:
    for kind, path in paths.items():
        log.info("%s report: %s", kind, path)
    counts = report["counts"]
    _emit(report, as_json, f"drift test: {what}{counts['as_expected']}/{counts['cases'] - counts['not_applicable']} "
                           "cases as expected"
          + (f", {counts['not_applicable']} not applicable" if counts["not_applicable"] else "")
          + ("" if report["ok"] else f"; {counts['unexpected']} UNEXPECTED (see {paths['markdown']})"))
    if not report["ok"]:
        sys.exit(Exit.UNEXPECTED)


@main.command("drift-plan")
@options.matrix
@options.drift_model
@options.cases
@options.shards
@options.costs
@command
def drift_plan_command(project: Project, matrix_path: Path, model: Path, cases: tuple[str, ...], shards: int,
                       costs: Path | None):
    """Print how drift-test --shard I/N splits the matrix, as one line of JSON a CI job matrix reads
    (GitHub: matrix: ${{ fromJSON(needs.plan.outputs.shards) }}): each shard's cases, the
    environments and images it needs, and its estimated seconds."""
    from .drift.runner import with_model_environment
    from .drift.shards import measured_costs, plan
    from .steps.model_argument import matrix_model

    matrix = with_model_environment(_load_matrix(project, matrix_path, cases), matrix_model(model))
    click.echo(json.dumps(plan(matrix, shards, measured_costs(costs)), sort_keys=True))


@main.command("drift-merge")
@options.partials
@options.merge_out
@options.no_heatmap
@options.prefix
@options.json_output
@command
def drift_merge_command(project: Project, partials: tuple[Path, ...], out: Path, no_heatmap: bool, prefix: str,
                        as_json: bool):
    """Merge the shards' partial reports (files, or the directories holding them) into the report an
    unsharded run writes: JSON, Markdown, JUnit XML and the heatmap. Refuses, naming the file, shards
    of another model or matrix, a missing or repeated shard or case, a truncated report. Exit 1 when
    any case is unexpected."""
    from .drift.merge import merge
    from .drift.report import write_reports
    from .drift.runner import DriftOptions, render_heatmap

    report = merge(list(partials))
    paths = write_reports(report, out)
    if not no_heatmap:
        options_ = DriftOptions(model=Path(report.get("model") or "."), run=None, out=out, prefix=prefix,
                                run_id=f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:6]}")
        paths["heatmap"] = render_heatmap(_engine(), project, paths["json"], options_)
    _finish_drift(report, paths, as_json, f"{report['timing']['jobs']} shards merged: ")


def _transfer_setup(project: Project, matrix_path: Path, model: Path, shard: str | None, costs: Path | None):
    """The images the job needs: its shard's (--shard or the CI's variables), or, without a shard, all
    the matrix needs plus the merge job's heatmap image."""
    from .drift.runner import with_model_environment
    from .drift.shards import assign, measured_costs, parse_shard, shard_from_environment
    from .drift.transfer import image_names
    from .steps.model_argument import matrix_model

    matrix = with_model_environment(_load_matrix(project, matrix_path), matrix_model(model))
    chosen = parse_shard(shard) if shard else shard_from_environment(os.environ)
    cases = list(matrix.cases) if chosen is None else assign(matrix, chosen.total, measured_costs(costs))[chosen.index]
    return matrix, image_names(matrix, cases, merge=chosen is None)


def _receive(how, source: Path, project: Project, matrix_path: Path, model: Path, shard: str | None,
             costs: Path | None, prefix: str, as_json: bool) -> None:
    """images-load and images-pull: bring the images in, then check them; never build."""
    from .environments.images import BuildOptions

    matrix, names = _transfer_setup(project, matrix_path, model, shard, costs)
    _transferred(how(_engine(), project, matrix, names, source, BuildOptions(prefix=prefix, allow_pull=False)),
                 as_json)


def _transferred(result, as_json: bool) -> None:
    data = result.to_json()
    size = f", {result.bytes / 1e9:.2f} GB" if result.bytes is not None else ""
    _emit(data, as_json, f"{result.what}: {len(result.images)} images ({result.where}{size}, {result.seconds:.0f} s)\n"
          + "\n".join(f"  {image['tag']}  {image['id'][:19]}" for image in result.images))


@main.command("images-save")
@options.archive_out
@options.image_selection
@command
def images_save_command(project: Project, archive: Path, matrix_path: Path, model: Path, shard: str | None,
                        costs: Path | None, prefix: str, as_json: bool):
    """Write the images a drift-test shard needs (building what is missing) and their bases to one
    archive, for a CI job on another Docker daemon: pass it as an artifact, then images-load it."""
    from .drift.transfer import resolve, save
    from .environments.images import BuildOptions

    matrix, names = _transfer_setup(project, matrix_path, model, shard, costs)
    engine = _engine()
    _transferred(save(engine, resolve(engine, project, matrix, names, BuildOptions(prefix=prefix)), archive), as_json)


@main.command("images-load")
@options.archive_in
@options.image_selection
@command
def images_load_command(project: Project, archive: Path, matrix_path: Path, model: Path, shard: str | None,
                        costs: Path | None, prefix: str, as_json: bool):
    """Load an archive images-save wrote and check every image the shard needs against the inputs this
    checkout builds it from (Dockerfile, lock, scripts, base); refuse, naming what differs, otherwise."""
    from .drift.transfer import load

    _receive(load, archive, project, matrix_path, model, shard, costs, prefix, as_json)


@main.command("images-push")
@options.registry
@options.index_out
@options.image_selection
@command
def images_push_command(project: Project, registry: str, index: Path, matrix_path: Path, model: Path,
                        shard: str | None, costs: Path | None, prefix: str, as_json: bool):
    """Tag the images a shard needs (and their bases) under REGISTRY (host:port[/path]), push them with
    their labels, and write their name@digest references to --index for images-pull."""
    from .drift.transfer import push, resolve
    from .environments.images import BuildOptions

    matrix, names = _transfer_setup(project, matrix_path, model, shard, costs)
    engine = _engine()
    _transferred(push(engine, resolve(engine, project, matrix, names, BuildOptions(prefix=prefix)), registry, index),
                 as_json)


@main.command("images-pull")
@options.index_in
@options.image_selection
@command
def images_pull_command(project: Project, index: Path, matrix_path: Path, model: Path, shard: str | None,
                        costs: Path | None, prefix: str, as_json: bool):
    """Pull by digest the images images-push listed in INDEX, tag them under the kit's names, and check
    those the shard needs against this checkout's inputs, as images-load does."""
    from .drift.transfer import pull

    _receive(pull, index, project, matrix_path, model, shard, costs, prefix, as_json)


@main.command("doctor")
@options.model_argument
@options.manifest
@options.env_name
@options.image_tag
@options.load_op_libraries
@options.allow_soft_placement
@options.no_run
@options.matrix
@options.prefix
@options.json_output
@command
def doctor_command(project: Project, model: Path, manifest: Path | None, env_name: str | None, image_tag: str | None,
                   load_op_libraries: bool, allow_soft_placement: bool, run: bool, matrix_path: Path, prefix: str,
                   as_json: bool):
    """Whether a TensorFlow runtime can load and run MODEL (a frozen graph or its directory), and if not,
    each cause with its fix. Stages: manifest, static reading, the runtime's own import, one run.
    Runs in the inference image (or --env/--image). Exit 0: loadable; 3: blocking problems."""
    from .steps.diagnose import DoctorRequest, run_doctor

    code, text = run_doctor(_engine(), project, DoctorRequest(
        model=model, manifest=manifest, env_name=env_name, image_tag=image_tag, matrix_path=matrix_path, prefix=prefix,
        load_op_libraries=load_op_libraries, allow_soft_placement=allow_soft_placement, run=run, as_json=as_json))
    click.echo(text)
    sys.exit(code)


@main.command("bench")
@options.devices
@options.no_cold
@options.no_images
@options.no_inference
@options.quick
@options.repeats
@options.no_adopt
@options.page_only
@options.no_drift
@options.no_transfer
@options.no_reproducibility
@options.bench_run
@options.prefix
@command
def bench_command(project: Project, devices: tuple[str, ...], no_cold: bool, no_images: bool, no_inference: bool,
                  no_adopt: bool, no_drift: bool, no_transfer: bool, no_reproducibility: bool, quick: bool,
                  repeats: int, run: Path,
                  prefix: str, page_only: bool):
    """Measure inference speed (TF with oneDNN on/off and a folded graph, against ONNX Runtime; batch
    1/8/32 at 224 px; roofline; threads; start to first prediction), the kit's own costs (cold and
    warm builds, sizes) and whether training reproduces across CPU classes (simulated); merge them,
    dated, into bench/results.json."""
    from .bench.images import ImageBenchOptions, bench_images
    from .bench.inference import InferenceBenchOptions, bench_inference
    from .bench.page import write_page
    from .bench.results import QUICK_RESULTS, RESULTS, drift_timing, stamp, write_results

    if page_only:
        click.echo(write_page(project, RESULTS))
        return
    engine = _engine()
    results: dict = {}
    if not no_images:
        results["images"] = stamp(bench_images(engine, project, ImageBenchOptions(
            devices=tuple(devices), cold=not (no_cold or quick), repeats=1 if quick else repeats, prefix=prefix)))
    if not no_inference:
        results["inference"] = stamp({"quick" if quick else "full": bench_inference(engine, project, InferenceBenchOptions(
            run=run if run.is_absolute() else project.root / run, out=project.root / "out" / "bench",
            quick=quick, prefix=prefix))})
    if not no_reproducibility:
        from .bench.reproducibility import ReproducibilityOptions, bench_reproducibility

        run_dir = run if run.is_absolute() else project.root / run
        tiny = ("--max-steps", "4", "--batch-size", "8", "--log-every", "2") if quick else ()
        results["reproducibility"] = stamp({"quick" if quick else "full": bench_reproducibility(
            engine, project, ReproducibilityOptions(data=run_dir.parent / "data", out=project.root / "out" / "bench"
                                                    / ("reproducibility-quick" if quick else "reproducibility"),
                                                    train_args=tiny, prefix=prefix))})
    if not no_adopt:
        from .bench.adopt import AdoptBenchOptions, bench_adopt

        model = (run if run.is_absolute() else project.root / run).parent / "model"
        results["adopt"] = stamp({"quick" if quick else "full": bench_adopt(engine, project, AdoptBenchOptions(
            model=model, out=project.root / "out" / "bench" / "adopt", quick=quick, prefix=prefix))})
    if not no_drift:
        from .bench.drift import DriftBenchOptions, bench_drift

        model = (run if run.is_absolute() else project.root / run).parent / "model"
        results["drift"] = stamp({"quick" if quick else "full": bench_drift(project, DriftBenchOptions(
            model=model, out=project.root / "out" / "bench" / "drift", quick=quick, prefix=prefix))})
    if not no_transfer:
        from .bench.transfer import TransferBenchOptions, bench_transfer

        model = (run if run.is_absolute() else project.root / run).parent / "model"
        results["transfer"] = stamp({"quick" if quick else "full": bench_transfer(engine, project, TransferBenchOptions(
            model=model, out=project.root / "out" / "bench" / "transfer", rebuild=not quick, prefix=prefix))})
    results["drift_test"] = drift_timing(project)
    click.echo(write_results(project, results, QUICK_RESULTS if quick else RESULTS))
    if not quick:
        click.echo(write_page(project, RESULTS))


@main.command("clean")
@options.prefix
@options.clean_all
@options.superseded
@command
def clean_command(project: Project, prefix: str, everything: bool, superseded: bool):
    """Remove the kit's containers and images (found by label), and build leftovers."""
    import shutil

    from .errors import EngineError

    engine = _engine()
    if superseded:
        from .environments.images import remove_superseded

        removed, freed = remove_superseded(engine)
        log.info("removed %d superseded images (%.2f GB)", removed, freed / 1e9)
        return
    removed = engine.remove_containers(KIT_LABEL)
    images = [image for image in engine.list_images(KIT_LABEL) if everything or "io.coldchain.role" in image.labels]
    gone, kept = 0, []
    for image in images:
        try:
            engine.remove_image(image.id)
            gone += 1
        except EngineError as error:  # in use, or removed by someone else meanwhile: report, go on
            kept.append(f"{image.tags[0] if image.tags else image.id[:19]}: {error.message}")
    shutil.rmtree(project.build_dir, ignore_errors=True)
    if everything:
        shutil.rmtree(project.wheelhouse, ignore_errors=True)
    log.info("removed %d containers and %d images", removed, gone)
    for line in kept:
        log.warning("kept %s", line)


if __name__ == "__main__":
    main()
