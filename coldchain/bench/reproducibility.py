"""Whether a training run gives the same model.pb on CPUs with and without AVX-512 VNNI, simulated on
this machine by forcing what differs between the two classes: TensorFlow's oneDNN default
(TF_ENABLE_ONEDNN_OPTS) and the instructions oneDNN's kernels may use (ONEDNN_MAX_CPU_ISA). Each
training mode (default, portable) is trained under each simulated class; the sha256 of every frozen
model is recorded with the effective numerics the run reported."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from ..cache import produce, tree_fingerprint
from ..config import IMAGES, Project
from ..contract import (ENV_ONEDNN, FLAG_BATCH_SIZE, FLAG_DATA, FLAG_LOG_EVERY, FLAG_MAX_STEPS, FLAG_NUMERICS,
                        MANIFEST_FILE, MOUNT_DATA, RUN_CONFIG_FILE, describe_numerics)
from ..engine import Engine
from ..environments.images import BuildOptions, ensure_image
from ..hostinfo import cpu_class
from ..steps.pipeline import StepConfig, freeze_step, run_step

log = logging.getLogger(__name__)
ISA_CAP = "ONEDNN_MAX_CPU_ISA"
# What a CPU class decides, forced: on an AVX2-only machine only oneDNN's switch can be simulated (it
# cannot gain instructions), on an AVX-512 one both.
SIMULATED_CLASSES = {
    "as-avx2": {ENV_ONEDNN: "0", ISA_CAP: "AVX2"},
    "as-avx512-vnni": {ENV_ONEDNN: "1"},
}
MODES = ("default", "portable")
# Quick mode (CI): a few steps, enough to compare bytes.
QUICK_TRAIN_ARGS = (FLAG_MAX_STEPS, "4", FLAG_BATCH_SIZE, "8", FLAG_LOG_EVERY, "2")


@dataclass(frozen=True)
class ReproducibilityOptions:
    data: Path  # the dataset every run trains on (make data's)
    out: Path
    train_args: tuple[str, ...] = ()  # e.g. a few steps in quick mode
    prefix: str = "coldchain"
    run_id: str = "coldchain-bench"

    def run_and_model(self, mode: str, simulated: str) -> tuple[Path, Path]:
        """Where the run of `mode` under the `simulated` CPU class and its frozen model are kept."""
        base = (self.out / f"{mode}-{simulated}").resolve()
        return base / "run", base / "model"


def bench_reproducibility(engine: Engine, project: Project, options: ReproducibilityOptions) -> dict:
    train = ensure_image(engine, project, IMAGES["train-cpu"], BuildOptions(prefix=options.prefix))
    data_fingerprint = tree_fingerprint(options.data)
    runs: dict = {}
    for mode in MODES:
        for simulated, environment in SIMULATED_CLASSES.items():
            run, model = options.run_and_model(mode, simulated)
            arguments = (FLAG_DATA, MOUNT_DATA, FLAG_NUMERICS, mode, *options.train_args)
            step = StepConfig(name="train", role="train", module="train", output=run,
                              inputs={MOUNT_DATA: options.data.resolve()}, arguments=arguments,
                              environment=environment, prefix=options.prefix, run_id=options.run_id, timeout_s=7200)
            key = {"image": train.info.labels.get("io.coldchain.context.sha256"), "args": list(arguments),
                   "environment": environment, "data": data_fingerprint}
            log.info("reproducibility: training in %s mode %s", mode, simulated)
            produce(step.output, key, lambda step=step: run_step(engine, project, step, train))
            freeze = freeze_step(step.output, model, prefix=options.prefix, run_id=options.run_id)
            produce(freeze.output, {**key, "freeze": True}, lambda freeze=freeze: run_step(engine, project, freeze, train))
            manifest = json.loads((freeze.output / MANIFEST_FILE).read_text())
            numerics = json.loads((step.output / RUN_CONFIG_FILE).read_text())["numerics"]
            runs.setdefault(mode, {})[simulated] = {"model_sha256": manifest["model"]["sha256"],
                                                    "forced": environment, "numerics": describe_numerics(numerics)}
    return {"host_cpu_class": cpu_class(), "runs": runs,
            "identical_across_classes": {mode: len({run["model_sha256"] for run in runs[mode].values()}) == 1
                                         for mode in MODES}}
