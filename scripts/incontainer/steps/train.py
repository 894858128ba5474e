"""The train step: train (or fine-tune) ResNet v1 50 with tf_slim on a folder or slim TFRecord dataset.

Stages: read the data, build the training graph, plan what a checkpoint restores, run the steps,
evaluate the held-out split, record config.json and metrics.json. The numerics mode decides how the
run computes: TensorFlow's own choices (default), single-threaded deterministic kernels, or a
portable mode whose settings do not depend on the CPU (oneDNN off, oneDNN's kernels capped at AVX2,
fixed thread pools).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import random
import time
from dataclasses import dataclass
from typing import Optional, Sequence

from ..common import (InsideError, atomic_write_json, atomic_write_text, import_tensorflow_quietly, log,
                      quiet_tensorflow_logs, run_main, silence_tensorflow_deprecations)
from ..contract import (ENV_ONEDNN, FLAG_BATCH_SIZE, FLAG_CHECKPOINT_PATH, FLAG_DATA, FLAG_IMAGE_SIZE,
                        FLAG_LABELS_OFFSET, FLAG_LOG_EVERY, FLAG_MAX_STEPS, FLAG_NUMERICS, FLAG_ON_BAD_IMAGE, FLAG_OUT,
                        FLAG_PREPROCESSING, FLAG_PREPROCESSING_FIELD, LABELS_FILE, MODULES, RUN_CONFIG_FILE,
                        RUN_METRICS_FILE)

DEFAULT_MAX_STEPS = 120
OPTIMIZERS = ("momentum", "sgd", "adam")
LR_SCHEDULES = ("cosine", "constant")
CHECKPOINT_BASENAME = "model.ckpt"
MODEL_NAME_LOGITS = "resnet_v1_50/logits"
NUMERICS_MODES = ("default", "deterministic", "portable")
PORTABLE_THREADS = (2, 2)
PORTABLE_ENVIRONMENT = {ENV_ONEDNN: "0", "ONEDNN_MAX_CPU_ISA": "AVX2"}


@dataclass(frozen=True)
class TrainConfig:
    data: str
    out: str
    image_size: int = 64
    batch_size: int = 16
    max_steps: Optional[int] = None
    epochs: Optional[float] = None
    learning_rate: float = 0.01
    lr_schedule: str = "cosine"
    warmup_steps: Optional[int] = None
    optimizer: str = "momentum"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_norm_decay: float = 0.9
    batch_norm_epsilon: float = 1e-5
    seed: int = 0
    numerics: str = "default"
    preprocessing: Optional[str] = None  # a preset; default: vgg when fine-tuning a resnet_v1 checkpoint, else coldchain
    preprocessing_fields: tuple = ()
    checkpoint_path: Optional[str] = None
    checkpoint_exclude_scopes: Optional[tuple] = None
    trainable_scopes: tuple = ()
    ignore_missing_vars: bool = False
    labels_offset: int = 0
    on_bad_image: str = "fail"
    log_every: int = 10
    flip: bool = True
    eval_batch_size: int = 32

    @property
    def deterministic(self) -> bool:
        return self.numerics == "deterministic"

    @property
    def threads(self) -> tuple:
        return {"deterministic": (1, 1), "portable": PORTABLE_THREADS}.get(self.numerics, (0, 0))


def parse_scope_list(text: Optional[str]) -> tuple:
    """Comma-separated scope flags as slim writes them; blanks are ignored."""
    if not text:
        return ()
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parse_args(argv: Optional[Sequence[str]]) -> TrainConfig:
    from ..data.preprocess import PRESETS

    parser = argparse.ArgumentParser(prog=f"python -m {MODULES['train']}", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(FLAG_DATA, required=True, help="class-folder dataset (optionally train/ and val/) or slim TFRecords dir")
    parser.add_argument(FLAG_OUT, required=True, help="run directory for checkpoints, summaries, config.json, metrics.json")
    parser.add_argument(FLAG_IMAGE_SIZE, type=int, default=64)
    parser.add_argument(FLAG_BATCH_SIZE, type=int, default=16)
    length = parser.add_mutually_exclusive_group()
    length.add_argument(FLAG_MAX_STEPS, type=int, default=None, help=f"default {DEFAULT_MAX_STEPS} when --epochs is not given")
    length.add_argument("--epochs", type=float, default=None)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="cosine", help="cosine decays to 0 after a linear warmup")
    parser.add_argument("--warmup-steps", type=int, default=None, help="default: 10%% of steps, at most 50")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="momentum")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--batch-norm-decay", type=float, default=0.9,
                        help="moving-average decay; slim's 0.997 needs thousands of steps to settle")
    parser.add_argument("--batch-norm-epsilon", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(FLAG_NUMERICS, choices=NUMERICS_MODES, default="default",
                        help="default: TensorFlow's choices (oneDNN on only on VNNI/BF16/AMX CPUs, one thread per "
                             "core); deterministic: op determinism, one thread; portable: oneDNN off, oneDNN kernels "
                             f"capped at AVX2, {PORTABLE_THREADS[0]}/{PORTABLE_THREADS[1]} threads - the same settings "
                             "on any x86-64 CPU")
    parser.add_argument("--deterministic", dest="numerics", action="store_const", const="deterministic",
                        help="same as --numerics deterministic")
    parser.add_argument(FLAG_PREPROCESSING, choices=PRESETS, default=None,
                        help="preprocessing preset as slim names it (default: vgg when fine-tuning a resnet_v1 "
                             "checkpoint, as slim does; else coldchain)")
    parser.add_argument(FLAG_PREPROCESSING_FIELD, action="append", default=[], metavar="FIELD=VALUE",
                        help="change one field of the preset (repeatable)")
    parser.add_argument(FLAG_CHECKPOINT_PATH, default=None, help="checkpoint prefix or directory (latest) to fine-tune from")
    parser.add_argument("--checkpoint-exclude-scopes", default=None,
                        help=f"comma-separated scopes not restored; default {MODEL_NAME_LOGITS} when class counts differ")
    parser.add_argument("--trainable-scopes", default=None, help="comma-separated scopes to train; default all")
    parser.add_argument("--ignore-missing-vars", action="store_true")
    parser.add_argument(FLAG_LABELS_OFFSET, type=int, default=0)
    parser.add_argument(FLAG_ON_BAD_IMAGE, choices=("fail", "skip"), default="fail")
    parser.add_argument(FLAG_LOG_EVERY, type=int, default=10)
    parser.add_argument("--no-flip", dest="flip", action="store_false", help="disable random horizontal flips")
    parser.add_argument("--eval-batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    config = TrainConfig(
        data=args.data, out=args.out, image_size=args.image_size, batch_size=args.batch_size,
        max_steps=args.max_steps, epochs=args.epochs, learning_rate=args.learning_rate,
        lr_schedule=args.lr_schedule, warmup_steps=args.warmup_steps, optimizer=args.optimizer,
        momentum=args.momentum, weight_decay=args.weight_decay, batch_norm_decay=args.batch_norm_decay,
        batch_norm_epsilon=args.batch_norm_epsilon, seed=args.seed, numerics=args.numerics,
        preprocessing=args.preprocessing, preprocessing_fields=tuple(args.preprocessing_field),
        checkpoint_path=args.checkpoint_path,
        checkpoint_exclude_scopes=parse_scope_list(args.checkpoint_exclude_scopes)
        if args.checkpoint_exclude_scopes is not None else None,
        trainable_scopes=parse_scope_list(args.trainable_scopes), ignore_missing_vars=args.ignore_missing_vars,
        labels_offset=args.labels_offset, on_bad_image=args.on_bad_image, log_every=args.log_every,
        flip=args.flip, eval_batch_size=args.eval_batch_size,
    )
    validate(config)
    return config


def validate(config: TrainConfig) -> None:
    checks = [
        (config.image_size >= 32, f"--image-size {config.image_size}: ResNet v1 50 needs at least 32 pixels"),
        (config.batch_size >= 2, f"--batch-size {config.batch_size}: batch norm needs at least 2 images per batch"),
        (config.max_steps is None or config.max_steps >= 1, "--max-steps must be >= 1"),
        (config.epochs is None or config.epochs > 0, "--epochs must be > 0"),
        (config.learning_rate > 0, "--learning-rate must be > 0"),
        (0.0 <= config.batch_norm_decay < 1.0, "--batch-norm-decay must be in [0, 1)"),
        (config.weight_decay >= 0, "--weight-decay must be >= 0"),
        (config.log_every >= 1, "--log-every must be >= 1"),
        (config.eval_batch_size >= 1, "--eval-batch-size must be >= 1"),
        (config.warmup_steps is None or config.warmup_steps >= 0, "--warmup-steps must be >= 0"),
        (config.numerics in NUMERICS_MODES, f"--numerics {config.numerics}: choose one of {', '.join(NUMERICS_MODES)}"),
    ]
    for ok, message in checks:
        if not ok:
            raise InsideError(message)


def pin_numerics(config: TrainConfig) -> None:
    """Portable mode: TensorFlow reads these once, when it loads, so they are set before its import."""
    if config.numerics == "portable":
        os.environ.update(PORTABLE_ENVIRONMENT)


def resolve_checkpoint(path: str) -> str:
    """Accept a directory (latest checkpoint), a prefix, or a prefix's .index/.data file."""
    import tensorflow as tf

    if os.path.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise InsideError(f"no checkpoint in directory {path} (no 'checkpoint' state file or *.index); pass a checkpoint prefix")
        return latest
    for suffix in (".index", ".meta"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
    if ".data-" in os.path.basename(path):
        path = path.split(".data-")[0]
    if os.path.exists(path + ".index") or os.path.isfile(path):
        return path
    raise InsideError(f"checkpoint not found: {path}; pass a checkpoint prefix (e.g. resnet_v1_50.ckpt) or a directory")


def plan_checkpoint_restore(config: TrainConfig, num_classes: int):
    """slim's train_image_classifier semantics: restore model variables minus excluded scopes."""
    import tensorflow as tf
    import tf_slim as slim

    path = resolve_checkpoint(config.checkpoint_path)
    try:
        reader = tf.train.load_checkpoint(path)
        shapes = reader.get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError) as error:
        message = getattr(error, "message", str(error)).splitlines()[0]
        raise InsideError(f"cannot read checkpoint {path} ({message}); is it a TF checkpoint (V1 or V2)?") from None

    exclusions = config.checkpoint_exclude_scopes
    logits_shape = shapes.get(f"{MODEL_NAME_LOGITS}/weights")
    if exclusions is None:
        exclusions = (MODEL_NAME_LOGITS,) if logits_shape is not None and logits_shape[-1] != num_classes else ()

    def excluded(name: str) -> bool:
        return any(name == scope or name.startswith(scope.rstrip("/") + "/") for scope in exclusions)

    restore, missing, mismatched = [], [], []
    for variable in slim.get_model_variables():
        name = variable.op.name
        if excluded(name):
            continue
        if name not in shapes:
            missing.append(name)
            continue
        want = variable.shape.as_list()
        if list(shapes[name]) != want:
            mismatched.append(f"{name} checkpoint {list(shapes[name])} vs model {want}")
            continue
        restore.append(variable)
    if mismatched:
        raise InsideError(
            f"checkpoint {path} has {len(mismatched)} variables with other shapes, e.g. {mismatched[0]}; "
            "add their scope to --checkpoint-exclude-scopes"
        )
    if missing and not config.ignore_missing_vars:
        raise InsideError(
            f"checkpoint {path} lacks {len(missing)} model variables, e.g. {missing[0]}; "
            "pass --ignore-missing-vars or --checkpoint-exclude-scopes"
        )
    if not restore:
        raise InsideError(f"nothing to restore from checkpoint {path}: no variable names match the {num_classes}-class resnet_v1_50")
    report = {
        "checkpoint": os.path.basename(path),
        "exclude_scopes": list(exclusions),
        "restored_variables": len(restore),
        "missing_ignored": sorted(missing),
        "logits_classes_in_checkpoint": int(logits_shape[-1]) if logits_shape is not None else None,
    }
    return path, restore, report


def total_steps_for(config: TrainConfig, train_images: int) -> int:
    if config.max_steps is not None:
        return config.max_steps
    if config.epochs is not None:
        return max(1, math.ceil(config.epochs * train_images / config.batch_size))
    return DEFAULT_MAX_STEPS


def batch_indices(count: int, batch_size: int, steps: int, rng) -> list:
    """Epoch-wise shuffles concatenated; drawn up front so data order depends only on the seed."""
    import numpy as np

    order = []
    needed = steps * batch_size
    while len(order) < needed:
        order.extend(rng.permutation(count).tolist())
    flat = np.asarray(order[:needed], dtype=np.int64)
    return [flat[i * batch_size:(i + 1) * batch_size] for i in range(steps)]


def learning_rate_tensor(config: TrainConfig, global_step, total_steps: int, warmup_steps: int):
    import tensorflow as tf

    base = tf.constant(config.learning_rate, tf.float32)
    step = tf.cast(global_step, tf.float32)
    if config.lr_schedule == "constant":
        decayed = base
    else:
        progress = tf.clip_by_value((step - warmup_steps) / float(max(1, total_steps - warmup_steps)), 0.0, 1.0)
        decayed = base * 0.5 * (1.0 + tf.cos(math.pi * progress))
    if warmup_steps > 0:
        warm = base * (step + 1.0) / float(warmup_steps)
        decayed = tf.where(step < warmup_steps, warm, decayed)
    return tf.identity(decayed, name="learning_rate")


def make_optimizer(config: TrainConfig, learning_rate):
    import tensorflow as tf

    if config.optimizer == "momentum":
        return tf.compat.v1.train.MomentumOptimizer(learning_rate, momentum=config.momentum)
    if config.optimizer == "adam":
        return tf.compat.v1.train.AdamOptimizer(learning_rate)
    return tf.compat.v1.train.GradientDescentOptimizer(learning_rate)


def choose_preprocessing(config: TrainConfig):
    """The preset (slim's default for resnet_v1 checkpoints is vgg) and its fields, logged."""
    from ..data.preprocess import preset_spec, with_fields

    name = config.preprocessing
    if name is None:
        name = "vgg" if config.checkpoint_path else "coldchain"
        if config.checkpoint_path:
            log("train: fine-tuning a resnet_v1 checkpoint: vgg preprocessing, as slim's preprocessing_factory "
                "uses for resnet_v1 (pass --preprocessing to choose another)")
    spec = preset_spec(name, config.image_size, config.image_size)
    return with_fields(spec, config.preprocessing_fields, FLAG_PREPROCESSING_FIELD)


@dataclass
class TrainingGraph:
    graph: object
    images: object
    labels: object
    train_op: object
    total_loss: object
    cross_entropy: object
    learning_rate: object
    summaries: object
    saver: object
    init: object
    init_saver: object = None
    restore_checkpoint: Optional[str] = None
    restore_report: Optional[dict] = None


def build_training_graph(config: TrainConfig, spec, num_classes: int, total_steps: int, warmup_steps: int,
                         batch_norm) -> TrainingGraph:
    import tensorflow as tf

    from .resnet import build_resnet_v1_50

    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.set_random_seed(config.seed)
        images = tf.compat.v1.placeholder(tf.float32, [None, spec.height, spec.width, 3], name="images")
        labels = tf.compat.v1.placeholder(tf.int64, [None], name="labels")
        logits, _ = build_resnet_v1_50(images, num_classes, is_training=True, weight_decay=config.weight_decay,
                                       batch_norm=batch_norm)
        cross_entropy = tf.compat.v1.losses.sparse_softmax_cross_entropy(labels, logits)
        total_loss = tf.compat.v1.losses.get_total_loss(add_regularization_losses=True)
        global_step = tf.compat.v1.train.get_or_create_global_step()
        learning_rate = learning_rate_tensor(config, global_step, total_steps, warmup_steps)
        trainable = tf.compat.v1.trainable_variables()
        if config.trainable_scopes:
            trainable = [v for v in trainable if any(v.op.name.startswith(s.rstrip("/") + "/") or v.op.name == s
                                                     for s in config.trainable_scopes)]
            if not trainable:
                raise InsideError(f"--trainable-scopes {','.join(config.trainable_scopes)} match no variables; "
                                  f"scopes look like {MODEL_NAME_LOGITS} or resnet_v1_50/block4")
        train_op = make_optimizer(config, learning_rate).minimize(total_loss, global_step=global_step, var_list=trainable)
        restore = (None, None, None)
        if config.checkpoint_path:
            checkpoint, restore_vars, report = plan_checkpoint_restore(config, num_classes)
            restore = (tf.compat.v1.train.Saver(restore_vars), checkpoint, report)
        tf.compat.v1.summary.scalar("losses/cross_entropy", cross_entropy)
        tf.compat.v1.summary.scalar("losses/total_loss", total_loss)
        tf.compat.v1.summary.scalar("learning_rate", learning_rate)
        summaries = tf.compat.v1.summary.merge_all()
        # Relative paths in the `checkpoint` state file so the run directory can be moved or mounted elsewhere.
        saver = tf.compat.v1.train.Saver(max_to_keep=2, save_relative_paths=True)
        init = tf.compat.v1.global_variables_initializer()
        graph.finalize()
    return TrainingGraph(graph, images, labels, train_op, total_loss, cross_entropy, learning_rate, summaries, saver,
                         init, *restore)


def run_steps(config: TrainConfig, model: TrainingGraph, dataset, total_steps: int) -> dict:
    """The training loop: batches and flips drawn up front from the seed; progress every log_every steps."""
    import numpy as np
    import tensorflow as tf

    from .evaluate import session_config

    rng = np.random.RandomState(config.seed)
    batches = batch_indices(len(dataset.train), config.batch_size, total_steps, rng)
    flips = rng.uniform(size=(total_steps, config.batch_size)) < 0.5 if config.flip else None
    with model.graph.as_default():
        writer = tf.compat.v1.summary.FileWriter(os.path.join(config.out, "train"), model.graph)
    window_loss, window_xent, window_images, window_start = [], [], 0, time.perf_counter()
    last_loss = last_xent = float("nan")
    start = time.perf_counter()
    with tf.compat.v1.Session(graph=model.graph, config=session_config(config.threads)) as session:
        session.run(model.init)
        if model.init_saver is not None:
            model.init_saver.restore(session, model.restore_checkpoint)
            log(f"train: restored {model.restore_report['restored_variables']} variables from "
                f"{model.restore_checkpoint} (excluded: {', '.join(model.restore_report['exclude_scopes']) or 'none'})")
        for step_index, indices in enumerate(batches):
            batch = dataset.train.images[indices]
            if flips is not None:
                batch = np.where(flips[step_index][:, None, None, None], batch[:, :, ::-1, :], batch)
            feed = {model.images: batch, model.labels: dataset.train.labels[indices]}
            step = step_index + 1
            want_log = step % config.log_every == 0 or step == total_steps
            fetches = [model.train_op, model.total_loss, model.learning_rate, model.cross_entropy] + \
                ([model.summaries] if want_log else [])
            results = session.run(fetches, feed_dict=feed)
            loss, rate = float(results[1]), float(results[2])
            window_xent.append(float(results[3]))
            if not math.isfinite(loss):
                raise InsideError(f"training diverged at step {step} (loss {loss}); lower --learning-rate "
                                  f"(now {config.learning_rate})")
            window_loss.append(loss)
            window_images += len(indices)
            if want_log:
                writer.add_summary(results[4], step)
                elapsed = time.perf_counter() - window_start
                log(f"train: step {step}/{total_steps} loss {np.mean(window_loss):.4f} "
                    f"(cross-entropy {np.mean(window_xent):.4f}) lr {rate:.5f} "
                    f"{window_images / max(elapsed, 1e-9):.1f} images/s")
                last_loss, last_xent = float(np.mean(window_loss)), float(np.mean(window_xent))
                window_loss, window_xent, window_images, window_start = [], [], 0, time.perf_counter()
        seconds = time.perf_counter() - start
        prefix = model.saver.save(session, os.path.join(config.out, CHECKPOINT_BASENAME), global_step=total_steps)
    writer.close()
    log(f"train: saved {prefix} after {seconds:.1f}s")
    return {"checkpoint_prefix": prefix, "seconds": seconds, "final_loss": last_loss, "final_cross_entropy": last_xent}


def train(config: TrainConfig) -> dict:
    import numpy as np
    import tensorflow as tf

    from ..data.dataset import load_dataset
    from ..runtime import effective_numerics
    from .evaluate import evaluate_checkpoint
    from .resnet import BatchNormSettings

    if os.path.exists(os.path.join(config.out, "checkpoint")):
        raise InsideError(f"run directory {config.out} already holds a training run; choose a new --out or remove it")
    os.makedirs(config.out, exist_ok=True)
    silence_tensorflow_deprecations()
    random.seed(config.seed)
    np.random.seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    numerics = effective_numerics(*config.threads)
    spec = choose_preprocessing(config)
    dataset = load_dataset(config.data, spec, config.on_bad_image, config.labels_offset, config.seed)
    total_steps = total_steps_for(config, len(dataset.train))
    warmup_steps = config.warmup_steps if config.warmup_steps is not None else min(50, total_steps // 10)
    batch_norm = BatchNormSettings(decay=config.batch_norm_decay, epsilon=config.batch_norm_epsilon)
    log(f"train: {len(dataset.train)} train / {len(dataset.val)} held-out images ({dataset.val_source}), "
        f"{dataset.num_classes} classes, {total_steps} steps of {config.batch_size}, {spec.preset} preprocessing, "
        f"numerics {config.numerics} (oneDNN {'on' if numerics['onednn']['enabled'] else 'off'}, threads "
        f"{numerics['threads_effective'][0]}/{numerics['threads_effective'][1]})")
    model = build_training_graph(config, spec, dataset.num_classes, total_steps, warmup_steps, batch_norm)
    record_config(config, dataset, spec, batch_norm, total_steps, warmup_steps, model.restore_report, numerics)
    trained = run_steps(config, model, dataset, total_steps)
    evaluation = evaluate_checkpoint(trained["checkpoint_prefix"], dataset.val, spec, dataset.num_classes, batch_norm,
                                     config.eval_batch_size, config.threads, os.path.join(config.out, "eval"),
                                     total_steps)
    metrics = {
        "steps": total_steps,
        "train_images": len(dataset.train),
        "train_seconds": round(trained["seconds"], 3),
        "train_images_per_second": round(total_steps * config.batch_size / trained["seconds"], 2),
        "final_loss": round(trained["final_loss"], 6),
        "final_cross_entropy": round(trained["final_cross_entropy"], 6),
        "checkpoint": os.path.basename(trained["checkpoint_prefix"]),
        "skipped_images": list(dataset.skipped),
        "held_out": evaluation,
        "numerics": numerics,
    }
    atomic_write_json(os.path.join(config.out, RUN_METRICS_FILE), metrics)
    log(f"train: held-out top-1 {evaluation['top1']:.4f} top-{evaluation['k']} {evaluation['topk']:.4f} "
        f"on {evaluation['images']} images ({dataset.val_source})")
    return metrics


def record_config(config, dataset, spec, batch_norm, total_steps, warmup_steps, restore_report, numerics) -> None:
    import tensorflow as tf

    from .resnet import MODEL_NAME

    atomic_write_text(os.path.join(config.out, LABELS_FILE), "".join(name + "\n" for name in dataset.class_names))
    atomic_write_json(os.path.join(config.out, RUN_CONFIG_FILE), {
        "schema_version": 1,
        "train": dataclasses.asdict(config),
        "model": {"name": MODEL_NAME, "num_classes": dataset.num_classes, "batch_norm": dataclasses.asdict(batch_norm),
                  "weight_decay": config.weight_decay},
        "preprocessing": spec.to_json(),
        "schedule": {"total_steps": total_steps, "warmup_steps": warmup_steps, "lr_schedule": config.lr_schedule},
        "dataset": {"layout": dataset.layout, "class_names": list(dataset.class_names),
                    "train_images": len(dataset.train), "held_out_images": len(dataset.val),
                    "held_out_source": dataset.val_source},
        "checkpoint_init": restore_report,
        "numerics": {"mode": config.numerics, **numerics},
        "trained_with": {"tensorflow": tf.__version__, "python": platform.python_version()},
    })


def main(argv: Optional[Sequence[str]] = None) -> Optional[int]:
    quiet_tensorflow_logs(import_now=False)
    config = parse_args(argv)
    pin_numerics(config)  # before TensorFlow is imported: it reads oneDNN's settings once
    import_tensorflow_quietly()
    train(config)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
