"""What adopting a model costs: a frozen graph made elsewhere (here the kit's own model.pb, taken as a
stranger's file, its outputs named on the command line) adopted in the default reference
environment, and with a requirements file pinning another TensorFlow, once with its image to build
(wheels already in the wheelhouse) and once with the image there."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import Project
from ..contract import FLAG_LOGITS, FLAG_OUTPUT, FLAG_PREPROCESSING, LOGITS_NODE, MODEL_FILE, PROBABILITIES_NODE
from ..engine import Engine
from ..steps.adopt import AdoptRequest, adopt

log = logging.getLogger(__name__)
OTHER_TENSORFLOW = "tensorflow==2.13.1"


@dataclass(frozen=True)
class AdoptBenchOptions:
    model: Path  # a model directory whose model.pb plays the foreign graph
    out: Path
    quick: bool = False  # the default environment only: no other TensorFlow to fetch and build
    prefix: str = "coldchain"


def _timed(action) -> float:
    start = time.perf_counter()
    action()
    return round(time.perf_counter() - start, 1)


def bench_adopt(engine: Engine, project: Project, options: AdoptBenchOptions) -> dict:
    arguments = (FLAG_PREPROCESSING, "coldchain", FLAG_OUTPUT, PROBABILITIES_NODE, FLAG_LOGITS, LOGITS_NODE)
    graph = options.model / MODEL_FILE
    shutil.rmtree(options.out, ignore_errors=True)
    options.out.mkdir(parents=True)
    results = {"graph_bytes": graph.stat().st_size}

    def run(name: str, **changes) -> float:
        return _timed(lambda: adopt(engine, project, AdoptRequest(model=graph, out=options.out / name,
                                                                   arguments=arguments, prefix=options.prefix,
                                                                   **changes)))

    results["default_environment_s"] = run("default")
    if options.quick:
        return results
    requirements = options.out / "requirements.txt"
    requirements.write_text(OTHER_TENSORFLOW + "\n")
    name = "bench-tf213"
    results["with_requirements_building_the_image_s"] = run("tf213-cold", requirements=requirements,
                                                            environment_name=name, rebuild_environment=True)
    results["with_requirements_image_present_s"] = run("tf213-warm", requirements=requirements,
                                                       environment_name=name)
    results["requirements"] = OTHER_TENSORFLOW
    results["note"] = ("cold = lock resolved, image built (wheels already in the wheelhouse: a first download of "
                       "TensorFlow's wheels adds its own time)")
    log.info("adopt: %s", results)
    return results
