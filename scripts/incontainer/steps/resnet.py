"""ResNet v1 50 built with tf_slim, in the only batch-norm configuration that works on TF 2.13+.

tf-slim 1.1.0's non-fused batch_norm falls back to keras.legacy_tf_layers, which newer Keras no
longer ships. slim takes its own fused implementation only when `updates_collections` is not the
default UPDATE_OPS, so we force `updates_collections=None` (in-place moving-average updates)
both in the batch_norm arg scope and in conv2d's normalizer_params, which overrides that scope.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import tensorflow as tf
import tf_slim as slim
from tf_slim.nets import resnet_v1

MODEL_NAME = "resnet_v1_50"
BLOCK_END_POINTS = tuple(f"{MODEL_NAME}/block{index}" for index in range(1, 5))


@dataclass(frozen=True)
class BatchNormSettings:
    decay: float = 0.9
    epsilon: float = 1e-5
    scale: bool = True

    def slim_params(self) -> dict:
        return {
            "decay": self.decay,
            "epsilon": self.epsilon,
            "scale": self.scale,
            "updates_collections": None,
            "fused": True,
        }


def build_resnet_v1_50(images: tf.Tensor, num_classes: int, *, is_training: bool, weight_decay: float,
                       batch_norm: BatchNormSettings) -> tuple[tf.Tensor, dict]:
    """Return logits squeezed to [N, K] and slim's end_points dict."""
    bn_params = batch_norm.slim_params()
    base_scope = resnet_v1.resnet_arg_scope(
        weight_decay=weight_decay,
        batch_norm_decay=batch_norm.decay,
        batch_norm_epsilon=batch_norm.epsilon,
        batch_norm_scale=batch_norm.scale,
    )
    with slim.arg_scope(base_scope), warnings.catch_warnings():
        # slim's layers still call the deprecated Layer.apply; the warning is noise to users.
        warnings.filterwarnings("ignore", message=".*layer.apply.*")
        with slim.arg_scope([slim.conv2d], normalizer_params=bn_params):
            with slim.arg_scope([slim.batch_norm], **bn_params):
                net, end_points = resnet_v1.resnet_v1_50(images, num_classes=num_classes, is_training=is_training)
    # This slim version has no spatial_squeeze argument: logits come out as [N, 1, 1, K].
    logits = tf.squeeze(net, axis=[1, 2], name="squeezed_logits")
    return logits, end_points
