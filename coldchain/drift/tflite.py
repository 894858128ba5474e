"""TFLite and int8 in the drift test: every artefact the selected cases run that is converted beforehand
(TFLite's targets, OpenVINO's and ONNX Runtime's int8: contract.per_run_target), converted once per drift
run (all targets of a model in one container of the cases' environment, as make quantize does) into
OUT/tflite/<env>/<variant>/<target>/ and reused while the model and the image's lock are unchanged.
Full int8 is calibrated as the kit does (its training images beside the model), else, for an adopted
model, on the golden inputs; the conversion measures the model's own bound either way, on this CPU
class (artefacts carried from another one are converted again)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..config import Project
from ..contract import CALIBRATION_TARGETS, SEVERITY_ERROR, Code
from ..engine import Engine
from ..environments.images import BuiltImage
from ..environments.matrix import CaseSpec
from ..errors import ColdchainError
from ..fsutil import atomic_write_text
from ..hostinfo import cpu_class, numerics_flags
from ..steps.convert import convert, stale_because
from .options import DriftOptions

log = logging.getLogger(__name__)
CONVERSION_TIMEOUT_S = 1800.0
TFLITE_DIR = "tflite"
CONVERSION_FIX = "fix the graph in TensorFlow first (the message names the op), or serve it with TensorFlow"

Key = tuple[str, str]  # (environment, variant)
CONVERTED_ON = "converted-on.json"  # the CPU the artefacts' bounds were measured on


def needed_targets(cases) -> dict[Key, tuple[str, ...]]:
    """The targets converted beforehand (TFLite's, the int8 ones) each (environment, variant) needs, in a
    stable order."""
    wanted: dict[Key, list[str]] = {}
    for case in cases:
        target = case.settings.per_run_target
        if target is not None and target not in wanted.setdefault((case.env, case.variant), []):
            wanted[(case.env, case.variant)].append(target)
    return {key: tuple(sorted(targets)) for key, targets in wanted.items()}


def converted_root(options: DriftOptions, key: Key) -> Path:
    return (options.out / TFLITE_DIR / key[0] / key[1]).resolve()


def this_cpu() -> dict:
    return {"cpu_class": cpu_class(), "cpu_flags": numerics_flags()}


def measured_elsewhere(root: Path) -> bool:
    """The artefacts were converted, and their bounds measured, on another CPU class (an out/ folder
    carried to another machine): converted again, so the expected outcome holds on every CPU."""
    try:
        return json.loads((root / CONVERTED_ON).read_text()) != this_cpu()
    except (OSError, ValueError):
        return True


def kit_calibration(model: Path) -> Path | None:
    """The kit's training images (data/train beside the model folder, where make puts them), else None."""
    kit = model.resolve().parent / "data" / "train"
    return kit if kit.is_dir() else None


def convert_for_cases(engine: Engine, project: Project, cases, options: DriftOptions,
                      images: dict[str, BuiltImage], models: dict[str, Path | str]) -> dict[Key, Path | str]:
    """Each (environment, variant)'s folder of artefacts converted beforehand, or why there is none (the converter's
    message: those cases' outcome is conversion-failed). Stale targets only, all in one container."""
    converted: dict[Key, Path | str] = {}
    for key, targets in needed_targets(cases).items():
        model = models[key[1]]
        if isinstance(model, str):
            continue  # the variant is not applicable: so are its cases
        root, image = converted_root(options, key), images[key[0]]
        elsewhere = measured_elsewhere(root)
        stale = tuple(target for target in targets if elsewhere or stale_because(model, target, image, root))
        if stale:
            calibration = kit_calibration(model)
            on_golden = calibration is None and any(target in CALIBRATION_TARGETS for target in stale)
            log.info("tflite: converting %s for %s in %s%s", key[1], ", ".join(stale), image.tag,
                     " (int8 calibrated on the golden inputs: no training images beside the model)" if on_golden else "")
            try:
                convert(engine, project, model, stale, image, memory=options.memory, prefix=options.prefix,
                        timeout_s=CONVERSION_TIMEOUT_S, calibration=calibration, into=root, on_golden=on_golden)
            except ColdchainError as failure:
                converted[key] = failure.message
                continue
            atomic_write_text(root / CONVERTED_ON, json.dumps(this_cpu()))
        else:
            log.info("tflite: %s's %s conversions are current", key[1], ", ".join(targets))
        converted[key] = root
    return converted


def conversion_failed_probe(case: CaseSpec, why: str) -> dict:
    """What a probe would have reported for a case whose artefact could not be made."""
    finding = {"code": Code.CONVERSION_FAILED, "severity": SEVERITY_ERROR, "stage": "conversion", "cause": why,
               "fix": CONVERSION_FIX}
    return {"outcome": Code.CONVERSION_FAILED, "loaded": False, "load_error": why,
            "diagnosis": {"outcome": Code.CONVERSION_FAILED, "findings": [finding]},
            "runtime": {"name": case.settings.runtime, "precision_declared": case.settings.precision,
                        "xnnpack": {"enabled": case.settings.xnnpack}}}
