"""Self-test of fine-tuning from an official-layout resnet_v1_50 checkpoint (training image only).

Pretrained weights cannot be downloaded here, so we write a checkpoint with the official variable
names and shapes (1000 classes, random values) and fine-tune a different class count from it.
"""
from __future__ import annotations

import argparse
import os
from typing import Sequence

from ..common import InsideError, log, quiet_tensorflow_logs, run_main
from ..contract import FLAG_DATA, FLAG_IMAGE_SIZE, FLAG_OUT, MODULES

OFFICIAL_CLASSES = 1000
PROBE_VARIABLE = "resnet_v1_50/conv1/weights"


def write_fake_official_checkpoint(directory: str, image_size: int = 64, seed: int = 1) -> str:
    """Same variable names/shapes as resnet_v1_50_2016_08_28/resnet_v1_50.ckpt; values are random."""
    import tensorflow as tf
    import tf_slim as slim

    from .resnet import BatchNormSettings, build_resnet_v1_50

    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.set_random_seed(seed)
        images = tf.compat.v1.placeholder(tf.float32, [None, image_size, image_size, 3])
        build_resnet_v1_50(images, OFFICIAL_CLASSES, is_training=False, weight_decay=0.0,
                           batch_norm=BatchNormSettings(decay=0.997))
        # Official checkpoints carry moving statistics and no optimizer slots.
        saver = tf.compat.v1.train.Saver(slim.get_model_variables())
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            os.makedirs(directory, exist_ok=True)
            return saver.save(session, os.path.join(directory, "resnet_v1_50.ckpt"), write_meta_graph=False)


def run_selftest(work: str, data: str | None, steps: int) -> dict:
    import numpy as np
    import tensorflow as tf

    from .make_data import MakeDataConfig, make_dataset
    from .train import TrainConfig, train

    if data is None:
        data = os.path.join(work, "data")
        make_dataset(MakeDataConfig(out=data, classes=3, train_per_class=8, val_per_class=4, size=64))
    checkpoint = write_fake_official_checkpoint(os.path.join(work, "official"))
    shapes = dict(tf.train.list_variables(checkpoint))
    assert shapes["resnet_v1_50/logits/weights"] == [1, 1, 2048, OFFICIAL_CLASSES], shapes["resnet_v1_50/logits/weights"]
    log(f"selftest: fake official checkpoint has {len(shapes)} variables")

    # 1. Wrong explicit exclusion: the 1000-class logits cannot load into 3 classes -> clear error.
    try:
        train(TrainConfig(data=data, out=os.path.join(work, "run_bad"), max_steps=1, checkpoint_path=checkpoint,
                          checkpoint_exclude_scopes=()))
        raise AssertionError("loading 1000-class logits into a 3-class model should fail")
    except InsideError as error:
        assert "checkpoint-exclude-scopes" in str(error), error
        log(f"selftest: mismatch reported as expected: {error}")

    # 2. Default behaviour: logits excluded automatically; only logits trained so conv1 must equal the checkpoint.
    run_dir = os.path.join(work, "run_finetune")
    metrics = train(TrainConfig(data=data, out=run_dir, max_steps=steps, batch_size=8,
                                checkpoint_path=os.path.dirname(checkpoint),  # directory form: latest checkpoint
                                trainable_scopes=("resnet_v1_50/logits",), log_every=1))
    restored = tf.train.load_checkpoint(tf.train.latest_checkpoint(run_dir)).get_tensor(PROBE_VARIABLE)
    original = tf.train.load_checkpoint(checkpoint).get_tensor(PROBE_VARIABLE)
    assert np.array_equal(restored, original), "conv1 weights were not restored from the checkpoint"
    new_logits = tf.train.load_checkpoint(tf.train.latest_checkpoint(run_dir)).get_tensor("resnet_v1_50/logits/weights")
    assert new_logits.shape == (1, 1, 2048, 3), new_logits.shape
    log("selftest: ok - body restored from 1000-class checkpoint, new 3-class logits trained")
    return {"ok": True, "checkpoint_variables": len(shapes), "held_out": metrics["held_out"]}


def main(argv: Sequence[str] | None = None) -> int | None:
    quiet_tensorflow_logs()
    parser = argparse.ArgumentParser(prog=f"python -m {MODULES['checkpoint']}", description=__doc__)
    parser.add_argument("--work", FLAG_OUT, dest="work", required=True,
                        help="scratch directory (must not hold a previous self-test)")
    parser.add_argument("--write-checkpoint-only", action="store_true",
                        help="only write the official-layout checkpoint into --work (for fine-tuning tests)")
    parser.add_argument(FLAG_IMAGE_SIZE, type=int, default=64)
    parser.add_argument(FLAG_DATA, default=None, help="dataset to fine-tune on (default: a tiny generated one)")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    if args.write_checkpoint_only:
        prefix = write_fake_official_checkpoint(args.work, args.image_size)
        log(f"selftest: wrote official-layout checkpoint {prefix}")
        return 0
    if os.path.exists(os.path.join(args.work, "run_finetune")):
        raise InsideError(f"{args.work} already holds a self-test; pass an empty --work directory")
    run_selftest(args.work, args.data, args.steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
