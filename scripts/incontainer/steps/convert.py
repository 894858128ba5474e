"""The convert step: the verified frozen graph converted for ONNX Runtime (tf2onnx) or OpenVINO (its
TensorFlow frontend, saved as fp32 IR) into --out (the host puts it at converted/<runtime>/ beside the
model), with sha256s and converter versions in conversion.json. Prints the record as JSON."""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from ..common import emit_json, log, quiet_tensorflow_logs, run_main
from ..contract import FLAG_ALLOW_OP, FLAG_MODEL, FLAG_OUT, FLAG_RUNTIME, MODULES, RUNTIME_ONNXRUNTIME, RUNTIME_OPENVINO
from ..runtimes.artefacts import convert


def main(argv: Optional[Sequence[str]] = None) -> Optional[int]:
    quiet_tensorflow_logs()
    parser = argparse.ArgumentParser(prog=f"python -m {MODULES['convert']}", description=__doc__)
    parser.add_argument(FLAG_MODEL, required=True, help="model directory (model.pb, manifest.json, golden.npz)")
    parser.add_argument(FLAG_RUNTIME, dest="runtime", required=True, choices=(RUNTIME_ONNXRUNTIME, RUNTIME_OPENVINO))
    parser.add_argument(FLAG_OUT, required=True, help="directory for the artefact (the model's converted/<runtime>/)")
    parser.add_argument(FLAG_ALLOW_OP, dest="allow_op", action="append", default=[], metavar="OP",
                        help="convert even though the graph holds this op (repeatable)")
    args = parser.parse_args(argv)
    record = convert(args.model, args.runtime, args.out, tuple(args.allow_op))
    log(f"convert: {args.runtime} artefact written ({', '.join(sorted(record['files']))}) in {record['conversion_s']} s")
    emit_json(record)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
