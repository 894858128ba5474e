"""Graphs that really contain ops an inference graph never needs (files, Python, checkpoints), each a
small classifier with one such op beside it or inside a tf.function body, built with TensorFlow's own
APIs, one .pb each. Nothing here is run: the graphs are only written.
Run in the training image: python dangerous.py OUT; prints {graph: the dangerous op it holds}."""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

SECRET = "/etc/passwd"


def classifier():
    images = tf.compat.v1.placeholder(tf.float32, [None, 8, 8, 3], name="input")
    weights = tf.constant(np.random.default_rng(0).normal(0, 0.5, (3, 3, 3, 4)).astype(np.float32))
    net = tf.nn.relu(tf.nn.conv2d(images, weights, strides=1, padding="SAME"))
    return tf.nn.softmax(tf.reduce_mean(net, axis=[1, 2]), name="probabilities")


def read_in_function():
    @tf.function
    def leak(name):
        return tf.io.read_file(name)
    return leak(tf.constant(SECRET))


def write_in_nested_function():
    @tf.function
    def inner(contents):
        tf.io.write_file("/tmp/coldchain-leak", contents)
        return contents

    @tf.function
    def outer(contents):
        return inner(contents)
    return outer(tf.constant("x"))


def read_in_cond_branch():
    @tf.function
    def maybe(flag):
        return tf.cond(flag, lambda: tf.io.read_file(SECRET), lambda: tf.constant(""))
    return maybe(tf.constant(False))


def python(x):
    return x


# name -> (the op the graph must hold, how to add it)
GRAPHS = {
    "read_file": ("ReadFile", lambda: tf.io.read_file(SECRET)),
    "write_file": ("WriteFile", lambda: tf.io.write_file("/tmp/coldchain-leak", "x")),
    "matching_files": ("MatchingFiles", lambda: tf.io.matching_files("/etc/*")),
    "py_function": ("EagerPyFunc", lambda: tf.py_function(python, [tf.constant(1.0)], tf.float32)),
    "py_func": ("PyFunc", lambda: tf.compat.v1.py_func(python, [tf.constant(1.0)], tf.float32)),
    "save_v2": ("SaveV2", lambda: tf.raw_ops.SaveV2(prefix="/tmp/ckpt", tensor_names=["w"], shape_and_slices=[""],
                                                    tensors=[tf.constant(1.0)])),
    "restore_v2": ("RestoreV2", lambda: tf.raw_ops.RestoreV2(prefix="/tmp/ckpt", tensor_names=["w"],
                                                             shape_and_slices=[""], dtypes=[tf.float32])),
    "immutable_const": ("ImmutableConst", lambda: tf.raw_ops.ImmutableConst(dtype=tf.float32, shape=[2],
                                                                            memory_region_name=SECRET)),
    "function_reads_file": ("ReadFile", read_in_function),
    "nested_function_writes_file": ("WriteFile", write_in_nested_function),
    "cond_branch_reads_file": ("ReadFile", read_in_cond_branch),
}


def ops_in(graph_def):
    return {node.op for node in graph_def.node} | {node.op for function in graph_def.library.function
                                                    for node in function.node_def}


def main(out):
    os.makedirs(out, exist_ok=True)
    made = {}
    for name, (op, add) in GRAPHS.items():
        graph = tf.Graph()
        with graph.as_default():
            classifier()
            add()
        graph_def = graph.as_graph_def()
        assert op in ops_in(graph_def), f"{name}: TensorFlow built no {op} node"
        with open(os.path.join(out, f"{name}.pb"), "wb") as handle:
            handle.write(graph_def.SerializeToString())
        made[name] = op
    print(json.dumps(made))


if __name__ == "__main__":
    main(sys.argv[1])
