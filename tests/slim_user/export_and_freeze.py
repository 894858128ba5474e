"""What a TF-slim user does outside coldchain, run in the training image: build the inference graph the
way slim's export_inference_graph.py does, save a checkpoint, freeze both with TensorFlow's own
freeze_graph tool; plus a labels file and a few images of different shapes.

Usage: python export_and_freeze.py OUT [--classes 1000] [--batch-size N] [--image-size 224] [--device D]
       [--logit-spread 2]
"""
import argparse
import os
import subprocess
import sys

import numpy as np
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

tf.compat.v1.disable_v2_behavior()  # reference variables, which freeze_graph needs
import tf_slim as slim  # noqa: E402
from tf_slim.nets import resnet_v1  # noqa: E402

OUTPUT = "resnet_v1_50/predictions/Reshape_1"


def calibrate_logits(session, graph, images, args) -> None:
    """Random weights with batch norm's initial statistics blow activations up through 50 layers and
    saturate the softmax; scale the classifier so logits spread like a trained model's (std ~2, or
    --logit-spread: a wider spread makes a confident, still unsaturated, softmax)."""
    logits = graph.get_tensor_by_name("resnet_v1_50/logits/BiasAdd:0")
    shape = [args.batch_size or 2, args.image_size, args.image_size, 3]
    sample = np.random.default_rng(args.seed).uniform(-100, 100, shape).astype(np.float32)
    spread = float(np.std(session.run(logits, {images: sample})))
    weights = graph.get_tensor_by_name("resnet_v1_50/logits/weights:0")
    session.run(tf.compat.v1.assign(weights, weights * (args.logit_spread / max(spread, 1e-6))))
    if args.logit_offset:
        biases = graph.get_tensor_by_name("resnet_v1_50/logits/biases:0")
        session.run(tf.compat.v1.assign(biases, biases + args.logit_offset))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--device", default="")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--logit-spread", type=float, default=2.0, help="the logits' standard deviation")
    parser.add_argument("--logit-offset", type=float, default=0.0, help="added to every class's logit (the "
                        "probabilities stay the same, the logits' magnitude grows)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.set_random_seed(args.seed)
        # export_inference_graph.py: a placeholder named 'input' of [batch_size, size, size, 3].
        images = tf.compat.v1.placeholder(name="input", dtype=tf.float32,
                                          shape=[args.batch_size, args.image_size, args.image_size, 3])
        # tf-slim 1.1.0 on TF 2.14 builds ResNet only with slim's fused batch norm (updates_collections=None).
        params = {"decay": 0.997, "epsilon": 1e-5, "scale": True, "updates_collections": None, "fused": True}
        with tf.device(args.device or None), slim.arg_scope(resnet_v1.resnet_arg_scope()):
            with slim.arg_scope([slim.conv2d], normalizer_params=params), slim.arg_scope([slim.batch_norm], **params):
                resnet_v1.resnet_v1_50(images, num_classes=args.classes, is_training=False)
        graph_def = graph.as_graph_def()
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(config=tf.compat.v1.ConfigProto(allow_soft_placement=True)) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            calibrate_logits(session, graph, images, args)
            checkpoint = saver.save(session, os.path.join(args.out, "model.ckpt"))
    with open(os.path.join(args.out, "inference_graph.pb"), "wb") as handle:
        handle.write(graph_def.SerializeToString())
    command = [sys.executable, "-m", "tensorflow.python.tools.freeze_graph",
               "--input_graph", os.path.join(args.out, "inference_graph.pb"), "--input_binary=true",
               "--input_checkpoint", checkpoint, "--output_node_names", OUTPUT,
               "--output_graph", os.path.join(args.out, "frozen.pb"),
               "--clear_devices=" + ("false" if args.device else "true")]
    subprocess.run(command, check=True)
    # slim's imagenet labels: 1000 names; a 1001-class model has the background class 0 in front.
    names = 1000 if args.classes in (1000, 1001) else args.classes
    with open(os.path.join(args.out, "labels.txt"), "w") as handle:
        handle.writelines(f"synset_{index:04d}\n" for index in range(names))
    pictures = os.path.join(args.out, "images")
    os.makedirs(pictures, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for index, (width, height) in enumerate([(300, 200), (256, 256), (180, 400)]):
        y, x = np.mgrid[0:height, 0:width]
        base = np.stack([np.sin(x / (9 + index)), np.cos(y / (7 + index)), np.sin((x + y) / 13)], axis=-1)
        noise = rng.normal(0, 0.15, size=(height, width, 3))
        pixels = np.clip((base + noise + 1.2) * 100, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(pictures, f"picture_{index}.png"))
        # The same pictures as users mostly have them: JPEG, in the kinds decoders disagree on.
        options = [{"quality": 90, "subsampling": 2}, {"quality": 95, "subsampling": 0, "progressive": True},
                   {"quality": 85, "subsampling": 1}][index]
        Image.fromarray(pixels).save(os.path.join(pictures, f"picture_{index}.jpg"), **options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
