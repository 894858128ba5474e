"""The convert step: the verified frozen graph converted for ONNX Runtime (tf2onnx), OpenVINO (its
TensorFlow frontend, saved as fp32 IR), TensorFlow Lite (TensorFlow's converter, tflite-<precision>) or
int8 for OpenVINO (NNCF) and ONNX Runtime (static QDQ), <runtime>-int8, into --out (the host puts it at converted/<target>/ beside the model), with sha256s and converter
versions in conversion.json. Prints the record as JSON. A graph with ops an inference graph never needs
is not converted unless --allow-op names them."""
from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

from ..common import emit_json, log, quiet_tensorflow_logs, run_main
from ..contract import (CONVERSION_TARGETS, FLAG_ALLOW_OP, FLAG_CALIBRATE_ON_GOLDEN, FLAG_CALIBRATION_IMAGES,
                        FLAG_HELD_OUT_IMAGES, FLAG_MODEL, FLAG_OUT, FLAG_RUNTIME, INT8_TARGETS, MODULES, TFLITE_TARGETS)
from ..runtimes.artefacts import convert, refuse_dangerous_ops


def main(argv: Optional[Sequence[str]] = None) -> Optional[int]:
    quiet_tensorflow_logs()
    parser = argparse.ArgumentParser(prog=f"python -m {MODULES['convert']}", description=__doc__)
    parser.add_argument(FLAG_MODEL, required=True, help="model directory (model.pb, manifest.json, golden.npz)")
    parser.add_argument(FLAG_RUNTIME, dest="runtimes", required=True, choices=CONVERSION_TARGETS, action="append",
                        help="a runtime or TFLite target (repeatable: several write --out/<target>/ each)")
    parser.add_argument(FLAG_CALIBRATION_IMAGES, dest="calibration", default=None,
                        help="representative images for full int8 (preprocessed as the manifest says)")
    parser.add_argument(FLAG_HELD_OUT_IMAGES, dest="held_out", default=None,
                        help="full int8 targets: images the model never saw; top-1 agreement with TensorFlow fp32 "
                             "measured on them and recorded")
    parser.add_argument(FLAG_CALIBRATE_ON_GOLDEN, dest="on_golden", action="store_true",
                        help="without representative images: calibrate full int8 on the golden inputs (the drift "
                             "test's conversion of a model with no training images beside it)")
    parser.add_argument(FLAG_OUT, required=True, help="directory for the artefact (the model's converted/<runtime>/)")
    parser.add_argument(FLAG_ALLOW_OP, dest="allow_op", action="append", default=[], metavar="OP",
                        help="convert even though the graph holds this op (repeatable)")
    args = parser.parse_args(argv)
    targets = list(dict.fromkeys(args.runtimes))
    refuse_dangerous_ops(args.model, tuple(args.allow_op))
    records = {target: convert_one(args.model, target, args.out if len(targets) == 1 else os.path.join(
        args.out, target), args.calibration, args.on_golden, args.held_out) for target in targets}
    emit_json(records[targets[0]] if len(targets) == 1 else records)
    return 0


def convert_one(model: str, target: str, out: str, calibration: Optional[str], on_golden: bool = False,
                held_out: Optional[str] = None) -> dict:
    if target in TFLITE_TARGETS:
        from ..runtimes.tflite_conversion import convert_target

        record = convert_target(model, target, out, calibration, on_golden, held_out)
    elif target in INT8_TARGETS:
        from ..runtimes.int8_conversion import convert_int8

        record = convert_int8(model, target, out, calibration, on_golden, held_out)
    else:
        record = convert(model, target, out)
    log(f"convert: {target} artefact written ({', '.join(sorted(record['files']))}) in {record['conversion_s']} s")
    return record


if __name__ == "__main__":
    raise SystemExit(run_main(main))
