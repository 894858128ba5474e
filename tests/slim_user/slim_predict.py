"""Run a frozen slim graph directly, the way a slim user would: TensorFlow decodes each image, slim's
documented vgg/inception evaluation preprocessing (slim_preprocessing.py), the graph's predictions.
Prints {image file name: [[class index, probability], ... top 5]} as JSON.

Usage: python slim_predict.py FROZEN.pb IMAGE_DIR SIZE PRESET [OUTPUT_NODE]"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from slim_preprocessing import decode, inception_eval, vgg_eval  # noqa: E402


def main() -> int:
    frozen, directory, size, preset = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    output = sys.argv[5] if len(sys.argv) > 5 else "resnet_v1_50/predictions/Reshape_1"
    graph_def = tf.compat.v1.GraphDef()
    with open(frozen, "rb") as handle:
        graph_def.ParseFromString(handle.read())
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    inputs = {}
    for name in sorted(os.listdir(directory)):  # eagerly, before the session makes its graph the default
        image = decode(os.path.join(directory, name))
        tensor = vgg_eval(image, size, size, int(round(256 * size / 224))) if preset == "vgg" else \
            inception_eval(image, size, size)
        inputs[name] = tensor.numpy()[None]
    top5 = {}
    with tf.compat.v1.Session(graph=graph, config=tf.compat.v1.ConfigProto(allow_soft_placement=True)) as session:
        for name, feed in inputs.items():
            probabilities = session.run(output + ":0", {"input:0": feed})
            row = probabilities.reshape(-1)
            top5[name] = [[int(i), float(row[i])] for i in np.argsort(-row, kind="stable")[:5]]
    print(json.dumps(top5, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
