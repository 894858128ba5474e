"""Facts about the host machine: CPU model, the ISA flags that change numerics, cores, a derived
FP32 peak. Read from /proc, never assumed (some machines report no clock)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from .contract import NUMERICS_FLAGS, ONEDNN_DEFAULT_FLAGS

FMA_PIPES_PER_CORE = 2  # Zen 2-4 and Intel server cores since Haswell issue two FMAs per cycle


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def cpu_model() -> str:
    for line in _cpuinfo():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cpu_flags() -> set[str]:
    for line in _cpuinfo():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def numerics_flags() -> list[str]:
    flags = cpu_flags()
    return [flag for flag in NUMERICS_FLAGS if flag in flags]


def cpu_class() -> str:
    """The class that decides TensorFlow's oneDNN default (and OpenVINO's bf16 default)."""
    flags = cpu_flags()
    if flags & set(ONEDNN_DEFAULT_FLAGS):
        return "avx512-vnni"
    return "avx2" if "avx2" in flags else "other"


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_description() -> str:
    return f"{cpu_model()} ({cores()} cores; {', '.join(numerics_flags()) or 'no AVX'})"


def derived_peak_fp32() -> dict:
    """The FP32 ceiling from the CPU's own description: cores x clock x SIMD lanes x 2 (an FMA is two
    FLOPs) x FMA pipes. None where /proc/cpuinfo reports no clock; vCPUs count as cores."""
    flags = cpu_flags()
    mhz = 0.0
    for line in _cpuinfo():
        if line.startswith("cpu MHz"):
            mhz = float(line.split(":", 1)[1])
            break
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags or "avx" in flags else 4
    fma = 2 if "fma" in flags or "avx512f" in flags else 1
    count = cores()
    gflops = count * (mhz / 1e3) * lanes * fma * FMA_PIPES_PER_CORE if mhz else None
    return {"gflops": round(gflops, 1) if gflops else None, "cores": count, "ghz": round(mhz / 1e3, 3) or None,
            "fp32_lanes": lanes, "fma": fma == 2, "fma_pipes_per_core": FMA_PIPES_PER_CORE,
            "derivation": f"{count} cores x {mhz / 1e3:.3f} GHz x {lanes} FP32 lanes x {fma} (FMA) x "
                          f"{FMA_PIPES_PER_CORE} pipes" if mhz else "no clock in /proc/cpuinfo"}
