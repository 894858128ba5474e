"""Inference threads: freeze records the setting `make bench` found fastest (bench/results.json) and the
machine that measured it; infer applies it only on a host like that one (same cores, CPU class and
numerics flags), otherwise TensorFlow's own choice, and `infer --threads` overrides both. A setting
measured on 2 cores must not pin a 32-core host to 2 threads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .. import hostinfo
from ..config import Project
from ..contract import FLAG_THREADS, FLAG_THREADS_MEASURED_ON, MANIFEST_FILE

RESULTS_FILE = "bench/results.json"
TENSORFLOW_DEFAULT = (0, 0)  # 0: TensorFlow chooses (one thread per core in each pool)
SOURCE_MEASURED = "measured-here"  # the manifest's setting, measured on a machine like this one
SOURCE_DEFAULT = "tensorflow-default"
SOURCE_USER = "user"  # infer --threads


@dataclass(frozen=True)
class Machine:
    """What decides which thread setting is fastest: cores, the CPU class, the numerics flags."""

    cores: int
    cpu_class: str
    cpu_flags: tuple[str, ...]

    @classmethod
    def here(cls) -> "Machine":
        return cls(hostinfo.cores(), hostinfo.cpu_class(), tuple(hostinfo.numerics_flags()))

    @classmethod
    def from_dict(cls, data) -> "Machine | None":
        """None when `data` is not a complete description (a manifest from before, an edited one)."""
        try:
            cores, cpu_class, flags = data["cores"], data["cpu_class"], data["cpu_flags"]
        except (KeyError, TypeError):
            return None
        if not isinstance(cores, int) or not isinstance(cpu_class, str) or not isinstance(flags, list):
            return None
        return cls(cores, cpu_class, tuple(str(flag) for flag in flags))

    def to_dict(self) -> dict:
        return {"cores": self.cores, "cpu_class": self.cpu_class, "cpu_flags": list(self.cpu_flags)}

    def matches(self, other: "Machine") -> bool:
        return (self.cores, self.cpu_class, set(self.cpu_flags)) == (other.cores, other.cpu_class, set(other.cpu_flags))


def parse_threads(text: str) -> tuple[int, int]:
    """INTRA,INTER as two counts >= 0; ValueError otherwise."""
    intra, inter = (int(part) for part in text.split(","))
    if intra < 0 or inter < 0:
        raise ValueError(f"{text!r}: thread counts cannot be negative")
    return intra, inter


def measured_threads(project: Project) -> tuple[tuple[int, int], Machine | None]:
    """The fastest setting at batch 8 that `make bench` recorded and the machine it measured it on;
    TensorFlow's default and None when there is no complete measurement."""
    try:
        inference = json.loads(project.path(RESULTS_FILE).read_text())["inference"]["full"]
        intra, inter = inference["recommended_threads"].removeprefix("intra").split("_inter")
        machine = Machine.from_dict(inference["measured"]["recommended_threads"])
        threads = (int(intra), int(inter))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return TENSORFLOW_DEFAULT, None
    return (threads, machine) if machine is not None else (TENSORFLOW_DEFAULT, None)


def freeze_arguments(project: Project) -> list[str]:
    """freeze's --threads, with the machine that measured them (--threads-measured-on)."""
    (intra, inter), machine = measured_threads(project)
    where = [FLAG_THREADS_MEASURED_ON, json.dumps(machine.to_dict(), sort_keys=True)] if machine else []
    return [FLAG_THREADS, f"{intra},{inter}", *where]


@dataclass(frozen=True)
class ThreadChoice:
    intra: int
    inter: int
    source: str  # SOURCE_MEASURED, SOURCE_DEFAULT or SOURCE_USER
    measured_on: dict | None = None  # the manifest's, when it recorded one

    def to_dict(self) -> dict:
        return {"intra_op": self.intra, "inter_op": self.inter, "source": self.source,
                "measured_on": self.measured_on}


def choose_threads(inference: dict, here: Machine, user: tuple[int, int] | None = None) -> ThreadChoice:
    """The threads infer runs with: the user's; else the manifest's (`inference`: its inference section)
    where the machine that measured them is like `here`; else TensorFlow's own choice."""
    measured_on = inference.get("measured_on") if isinstance(inference, dict) else None
    if user is not None:
        return ThreadChoice(*user, SOURCE_USER, measured_on)
    machine = Machine.from_dict(measured_on)
    if machine is not None and machine.matches(here):
        try:
            return ThreadChoice(int(inference["intra_op_threads"]), int(inference["inter_op_threads"]),
                                SOURCE_MEASURED, measured_on)
        except (KeyError, TypeError, ValueError):
            pass  # an incomplete section: nothing measured to apply
    return ThreadChoice(*TENSORFLOW_DEFAULT, SOURCE_DEFAULT, measured_on)


def manifest_inference(model_dir: Path) -> dict:
    """The manifest's inference section; {} when it cannot be read (the container then names the problem)."""
    try:
        with (model_dir / MANIFEST_FILE).open("rb") as handle:
            section = json.loads(handle.read(MANIFEST_READ_LIMIT)).get("inference")
    except (OSError, ValueError, AttributeError):
        return {}
    return section if isinstance(section, dict) else {}


MANIFEST_READ_LIMIT = 16 << 20  # a manifest is kilobytes; never read a hostile one without end
