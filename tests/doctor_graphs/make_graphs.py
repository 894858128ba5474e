"""Broken (and good) frozen graphs, built with TensorFlow's own APIs and GraphDef protos, one file each.
Run in the training image: python make_graphs.py OUT"""
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from google.protobuf import text_format  # noqa: E402

tf.compat.v1.disable_v2_behavior()


def small_net(images, name="out"):
    """conv (constant weights) -> relu -> mean -> softmax: a classifier in miniature."""
    weights = tf.constant(np.random.default_rng(0).normal(0, 0.5, (3, 3, 3, 4)).astype(np.float32))
    net = tf.nn.relu(tf.nn.conv2d(images, weights, strides=1, padding="SAME"))
    return tf.nn.softmax(tf.reduce_mean(net, axis=[1, 2]), name=name)


def write(out, name, graph_def):
    with open(os.path.join(out, f"{name}.pb"), "wb") as handle:
        handle.write(graph_def.SerializeToString())


def good(device=None):
    graph = tf.Graph()
    with graph.as_default(), tf.device(device):
        small_net(tf.compat.v1.placeholder(tf.float32, [None, 8, 8, 3], name="input"))
    graph_def = graph.as_graph_def()
    if device:
        for node in graph_def.node:
            node.device = device
    return graph_def


def from_text(text):
    graph_def = tf.compat.v1.GraphDef()
    text_format.Parse(text, graph_def)
    return graph_def


PLACEHOLDER = "node { name: 'input' op: 'Placeholder' attr { key: 'dtype' value { type: DT_FLOAT } } " \
              "attr { key: 'shape' value { shape { dim { size: -1 } dim { size: 5 } } } } }\n"


def top_k(k_type):
    k_value = "int64_val: 2" if k_type == "DT_INT64" else "int_val: 2"
    return from_text(PLACEHOLDER + f"""
node {{ name: 'k' op: 'Const' attr {{ key: 'dtype' value {{ type: {k_type} }} }}
        attr {{ key: 'value' value {{ tensor {{ dtype: {k_type} tensor_shape {{}} {k_value} }} }} }} }}
node {{ name: 'top_k' op: 'TopKV2' input: 'input' input: 'k' attr {{ key: 'T' value {{ type: DT_FLOAT }} }}
        attr {{ key: 'sorted' value {{ b: true }} }} attr {{ key: 'Tk' value {{ type: {k_type} }} }}
        attr {{ key: 'index_type' value {{ type: DT_INT32 }} }} }}
""")


def training_mode(with_updates):
    """Batch norm in training mode, as freeze_graph leaves a slim training graph: the moving-average
    updates (AssignSub on variables) hang off the output unless they were dropped."""
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, 8, 8, 3], name="input")
        scale = tf.compat.v1.get_variable("scale", initializer=tf.ones([3]))
        offset = tf.compat.v1.get_variable("offset", initializer=tf.zeros([3]))
        moving_mean = tf.compat.v1.get_variable("moving_mean", initializer=tf.zeros([3]), trainable=False)
        normed, mean, _ = tf.compat.v1.nn.fused_batch_norm(images, scale, offset, is_training=True)
        updates = [tf.compat.v1.assign_sub(moving_mean, 0.1 * (moving_mean - mean), name="AssignMovingAvg")]
        with tf.control_dependencies(updates if with_updates else []):
            small_net(normed)
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            with tempfile.TemporaryDirectory() as tmp:
                checkpoint = saver.save(session, os.path.join(tmp, "model.ckpt"))
                with open(os.path.join(tmp, "graph.pb"), "wb") as handle:
                    handle.write(graph.as_graph_def().SerializeToString())
                frozen = os.path.join(tmp, "frozen.pb")
                subprocess.run([sys.executable, "-m", "tensorflow.python.tools.freeze_graph", "--input_graph",
                                os.path.join(tmp, "graph.pb"), "--input_binary=true", "--input_checkpoint",
                                checkpoint, "--output_node_names", "out", "--output_graph", frozen], check=True,
                               capture_output=True)
                graph_def = tf.compat.v1.GraphDef()
                with open(frozen, "rb") as handle:
                    graph_def.ParseFromString(handle.read())
    return graph_def


def not_frozen():
    """A live variable feeding the output: nothing was frozen."""
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, 8, 8, 3], name="input")
        bias = tf.compat.v1.get_variable("bias", initializer=tf.zeros([3]))
        small_net(images + bias)
    return graph.as_graph_def()


def main() -> int:
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    write(out, "good", good())
    write(out, "unregistered-op", from_text(PLACEHOLDER + "node { name: 'out' op: 'ColdchainNoSuchOp' input: 'input' "
                                                          "attr { key: 'T' value { type: DT_FLOAT } } }"))
    write(out, "topk-int64-k", top_k("DT_INT64"))
    write(out, "topk-default-attrs", top_k("DT_INT32"))
    future = good()
    next(node for node in future.node if node.op == "Const").attr["coldchain_future"].b = True
    write(out, "future-attr", future)
    write(out, "remote-job-pin", good("/job:worker/task:1/device:CPU:0"))
    write(out, "gpu-pin", good("/device:GPU:0"))
    write(out, "training-mode-with-updates", training_mode(True))
    write(out, "training-mode", training_mode(False))
    too_new = good()
    too_new.versions.min_consumer = 99999
    write(out, "too-new", too_new)
    write(out, "not-frozen", not_frozen())
    return 0


if __name__ == "__main__":
    sys.exit(main())
