"""The inference thread settings freeze writes into a manifest: the fastest that `make bench`
measured at batch 8 on this machine class (bench/results.json), else TensorFlow's own choice."""

from __future__ import annotations

import json

from ..config import Project

RESULTS_FILE = "bench/results.json"


def recommended_threads(project: Project) -> str:
    """INTRA,INTER for freeze's --threads."""
    try:
        name = json.loads(project.path(RESULTS_FILE).read_text())["inference"]["full"]["recommended_threads"]
        intra, inter = name.removeprefix("intra").split("_inter")
        return f"{int(intra)},{int(inter)}"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "0,0"
