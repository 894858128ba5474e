"""Held-out evaluation of a training checkpoint with is_training=False (uses moving averages)."""
from __future__ import annotations

import time

import numpy as np

from ..common import InsideError


def session_config(threads: tuple):
    """Thread pools as the training mode fixes them ((0, 0): TensorFlow's choice)."""
    import tensorflow as tf

    return tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads[0], inter_op_parallelism_threads=threads[1])


def evaluate_checkpoint(checkpoint: str, split, spec, num_classes: int, batch_norm, batch_size: int,
                        threads: tuple, summary_dir: str | None = None, step: int = 0) -> dict:
    import tensorflow as tf

    from .resnet import build_resnet_v1_50

    if split is None or len(split) == 0:
        raise InsideError("no held-out images to evaluate; add DIR/val/<class>/ images or more training images per class")
    k = min(5, num_classes)
    graph = tf.Graph()
    with graph.as_default():
        # The variables are restored, never initialised; op determinism still wants a seed for their initialisers.
        tf.compat.v1.set_random_seed(0)
        images = tf.compat.v1.placeholder(tf.float32, [None, spec.height, spec.width, 3], name="images")
        logits, _ = build_resnet_v1_50(images, num_classes, is_training=False, weight_decay=0.0, batch_norm=batch_norm)
        saver = tf.compat.v1.train.Saver()
    all_logits = []
    start = time.perf_counter()
    with tf.compat.v1.Session(graph=graph, config=session_config(threads)) as session:
        saver.restore(session, checkpoint)
        for begin in range(0, len(split), batch_size):
            batch = split.images[begin:begin + batch_size]
            all_logits.append(session.run(logits, {images: batch}))
    seconds = time.perf_counter() - start
    scores = np.concatenate(all_logits)
    labels = split.labels
    ranked = np.argsort(-scores, axis=1, kind="stable")
    top1 = float(np.mean(ranked[:, 0] == labels))
    topk = float(np.mean(np.any(ranked[:, :k] == labels[:, None], axis=1)))
    per_class = {}
    for label in range(num_classes):
        members = labels == label
        if members.any():
            per_class[str(label)] = round(float(np.mean(ranked[members, 0] == label)), 6)
    if summary_dir:
        with graph.as_default():
            writer = tf.compat.v1.summary.FileWriter(summary_dir)
            summary = tf.compat.v1.Summary(value=[
                tf.compat.v1.Summary.Value(tag="eval/top1", simple_value=top1),
                tf.compat.v1.Summary.Value(tag=f"eval/top{k}", simple_value=topk),
            ])
            writer.add_summary(summary, step)
            writer.close()
    return {
        "top1": round(top1, 6),
        "top5": round(topk, 6),
        "k": k,
        "topk": round(topk, 6),
        "images": int(len(split)),
        "per_class_top1": per_class,
        "images_per_second": round(len(split) / max(seconds, 1e-9), 2),
    }
