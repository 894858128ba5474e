"""What a runtime really does with each graph, without the kit's code: import it, run it on inputs of
its placeholder's shape in a session with soft placement off (or on, with --soft; a TF 2 Session made
without a config turns it on), and check that an image alone gives what it gives inside a batch.
Prints {graph: "works" | "import fails" | "run fails" | "batch-dependent"} as JSON.
Usage: python behaviour.py DIR [--soft]"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def behaviour(path, soft):
    graph_def = tf.compat.v1.GraphDef()
    with open(path, "rb") as handle:
        graph_def.ParseFromString(handle.read())
    graph = tf.Graph()
    try:
        with graph.as_default():
            tf.compat.v1.import_graph_def(graph_def, name="")
    except Exception:  # noqa: BLE001 - any refusal is the behaviour being recorded
        return "import fails"
    consumed = {name.lstrip("^").split(":")[0] for node in graph_def.node for name in node.input}
    # A variable's initializer (Assign) is an unconsumed node too; fetched beside the output it would race
    # the variable's read in one run, so an unfrozen graph would work or fail by scheduling.
    outputs = [graph.get_operation_by_name(node.name).outputs[0] for node in graph_def.node
               if node.name not in consumed and node.op not in ("Const", "NoOp") and not node.op.startswith("Assign")
               and graph.get_operation_by_name(node.name).outputs]
    placeholder = next(node for node in graph_def.node if node.op == "Placeholder")
    dims = [d.size if d.size > 0 else 2 for d in placeholder.attr["shape"].shape.dim] or [2, 8, 8, 3]
    batch = np.random.default_rng(1).uniform(-1, 1, dims).astype(np.float32)
    try:
        with tf.compat.v1.Session(graph=graph, config=tf.compat.v1.ConfigProto(allow_soft_placement=soft)) as session:
            together = session.run(outputs, {"input:0": batch})
            alone = session.run(outputs, {"input:0": batch[:1]})
    except Exception:  # noqa: BLE001
        return "run fails"
    for a, b in zip(together, alone):
        if a.dtype.kind == "f" and np.max(np.abs(a[:1] - b)) > 1e-3 * max(1.0, float(np.max(np.abs(a)))):
            return "batch-dependent"
    return "works"


def main() -> int:
    directory, soft = sys.argv[1], "--soft" in sys.argv[2:]
    print(json.dumps({name[:-3]: behaviour(os.path.join(directory, name), soft)
                      for name in sorted(os.listdir(directory)) if name.endswith(".pb")}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
