"""What this runtime is: package versions, build, CPU, and the numerics it effectively computes with.

TensorFlow turns oneDNN on by itself on CPUs with AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX unless
TF_ENABLE_ONEDNN_OPTS says otherwise, so the environment variable alone does not say how a run
computed. Everything here is read back from the runtime and the CPU, never assumed.
"""
from __future__ import annotations

import json
import os
import platform
from typing import Any, Dict, List, Optional

from .contract import (EMULATED_CPUS, ENV_EMULATED_CPU, ENV_IMAGE_ID, ENV_IMAGE_LABELS, ENV_LOCK_SHA256, ENV_ONEDNN,
                       NUMERICS_FLAGS, ONEDNN_DEFAULT_FLAGS)

# Packages whose version changes what a frozen graph computes or how it loads.
TRACKED_PACKAGES = ("tensorflow", "numpy", "protobuf", "pillow")
ISA_CAP_ENV = "ONEDNN_MAX_CPU_ISA"  # oneDNN's own cap on the instructions its kernels use


def cpu_flags() -> List[str]:
    """All ISA extensions /proc/cpuinfo lists (AVX-512 vs AVX2 kernels round differently); under an
    emulated CPU model (ENV_EMULATED_CPU), the flags its CPUID shows, which the kernels chose by."""
    emulated = os.environ.get(ENV_EMULATED_CPU)
    if emulated:
        return sorted(EMULATED_CPUS.get(emulated, ()))
    try:
        with open("/proc/cpuinfo", "r", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    return sorted(set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return []


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def onednn_state() -> Dict[str, Any]:
    """Whether oneDNN is on as TensorFlow decided it, and what decided it."""
    requested = os.environ.get(ENV_ONEDNN)
    flags = set(cpu_flags())
    deciding = sorted(flags & set(ONEDNN_DEFAULT_FLAGS))
    enabled: Optional[bool] = None
    try:
        import tensorflow  # noqa: F401 - the query below needs TensorFlow loaded
        from tensorflow.python.util import _pywrap_util_port

        enabled = bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        pass
    if requested is not None and requested.strip().lower() in ("0", "1", "true", "false"):
        decided_by = ENV_ONEDNN
    elif platform.machine() != "x86_64":
        # aarch64's TensorFlow (tensorflow-cpu-aws) decides by its own build (oneDNN on the Arm Compute
        # Library), not by x86 features; under qemu /proc/cpuinfo even lists the emulating host's.
        decided_by = f"{platform.machine()} build"
        deciding = []
    else:
        decided_by = "cpu: " + (", ".join(deciding) if deciding else "none of " + ", ".join(ONEDNN_DEFAULT_FLAGS))
    return {"enabled": enabled, "requested": requested, "decided_by": decided_by, "cpu_features": deciding,
            "max_cpu_isa": os.environ.get(ISA_CAP_ENV)}


def effective_numerics(intra_op_threads: int = 0, inter_op_threads: int = 0, device: str = "cpu") -> Dict[str, Any]:
    """The settings that decide the bits a run produces: TF version, oneDNN as TF decided it, the
    ISA, the thread pools (0 = one thread per core), the device."""
    import tensorflow as tf

    count = cores()
    return {
        "tensorflow": tf.__version__,
        "onednn": onednn_state(),
        # x86 extensions only mean something to x86 kernels (under qemu an aarch64 container reads the host's).
        "isa": [flag for flag in NUMERICS_FLAGS if flag in set(cpu_flags())] if platform.machine() == "x86_64" else [],
        "intra_op_threads": int(intra_op_threads),
        "inter_op_threads": int(inter_op_threads),
        "threads_effective": [int(intra_op_threads) or count, int(inter_op_threads) or count],
        "cores": count,
        "device": device,
        "machine": platform.machine(),
        **({"emulated_cpu": os.environ[ENV_EMULATED_CPU]} if os.environ.get(ENV_EMULATED_CPU) else {}),
    }


def describe() -> Dict[str, Any]:
    """Versions and build of this runtime, recorded in manifests and reports."""
    import numpy
    import tensorflow as tf

    description: Dict[str, Any] = {
        "tensorflow": tf.__version__,
        "tensorflow_git_version": tf.version.GIT_VERSION,
        "tensorflow_compiler": tf.version.COMPILER_VERSION,
        "graph_def_version": tf.version.GRAPH_DEF_VERSION,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "machine": platform.machine(),
        ENV_ONEDNN: os.environ.get(ENV_ONEDNN),
        "cpu_flags": cpu_flags(),
    }
    try:
        from google import protobuf
        description["protobuf"] = protobuf.__version__
    except ImportError:  # pragma: no cover - TF always ships protobuf
        description["protobuf"] = None
    try:
        import PIL
        description["pillow"] = PIL.__version__
    except ImportError:
        description["pillow"] = None
    try:
        description["build_info"] = {key: str(value) for key, value in sorted(tf.sysconfig.get_build_info().items())}
    except Exception:  # noqa: BLE001 - absent on some exotic builds; the rest is still useful
        description["build_info"] = {}
    return description


def image_identity() -> Dict[str, Any]:
    """The kit image this runs in, as the host passed it (absent outside coldchain's containers)."""
    host: Dict[str, Any] = {}
    for name in (ENV_LOCK_SHA256, ENV_IMAGE_ID):
        if os.environ.get(name):
            host[name] = os.environ[name]
    raw = os.environ.get(ENV_IMAGE_LABELS)
    if raw:
        try:
            host[ENV_IMAGE_LABELS] = json.loads(raw)
        except ValueError:
            host[ENV_IMAGE_LABELS] = {"unparsed": raw}
    return host


def quick_graph_optimization(config) -> Dict[str, str]:
    """Grappler optimizes the graph again for every new fetch, about 0.55 s of ResNet v1 50's first
    prediction on 2 cores. Three of its parts do nothing to a frozen inference graph on a CPU: the
    memory optimizer (swapping for accelerator memory), the layout optimizer (NCHW is for GPUs; kept
    on where one is visible) and the meta optimizer's second pass (no change on slim's ResNet,
    measured); off, the first prediction comes 0.27 s sooner with bit-identical outputs. The golden
    check runs under the same settings, and a kept check applies only to them. Returns what was set."""
    import tensorflow as tf
    from tensorflow.core.protobuf import rewriter_config_pb2

    rewrites = config.graph_options.rewrite_options
    rewrites.memory_optimization = rewriter_config_pb2.RewriterConfig.NO_MEM_OPT
    rewrites.meta_optimizer_iterations = rewriter_config_pb2.RewriterConfig.ONE
    settings = {"memory_optimizer": "off", "meta_optimizer_iterations": "one"}
    if not tf.config.list_physical_devices("GPU"):
        rewrites.layout_optimizer = rewriter_config_pb2.RewriterConfig.OFF
        settings["layout_optimizer"] = "off (no GPU)"
    return settings
