"""Build-time check of an image's environment, run as a Dockerfile step so that a mismatch
fails the build. Prints the environment as JSON (recorded in the image) on success.

Checks that Python, TensorFlow and numpy are the versions the lock and base promised, and for
CUDA images that the CUDA/cuDNN wheels installed are the ones this TensorFlow was built
against (tf.sysconfig.get_build_info()). Also runs one small TF computation, which a CUDA
image must manage on a host without a GPU too."""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import sys
from importlib import metadata

from .contract import MODULES, Exit, error_line

# (wheel distribution, build_info key, how many version components must agree)
CUDA_WHEELS = (
    ("nvidia-cuda-runtime-cu11", "cuda_version", 2),
    ("nvidia-cuda-runtime-cu12", "cuda_version", 2),
    ("nvidia-cudnn-cu11", "cudnn_version", 1),
    ("nvidia-cudnn-cu12", "cudnn_version", 1),
)


class EnvironmentMismatch(Exception):
    pass


def installed(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def leading(version: str, parts: int) -> str:
    return ".".join(version.split(".")[:parts])


def check_versions(expect_python: str | None, expect_tensorflow: str | None, expect_numpy: str | None,
                   expect_machine: str | None = None) -> dict:
    import numpy
    import tensorflow as tf

    found = {"python": platform.python_version(), "tensorflow": tf.__version__, "numpy": numpy.__version__,
             "machine": platform.machine()}
    wanted = {"python": expect_python, "tensorflow": expect_tensorflow, "numpy": expect_numpy,
              "machine": expect_machine}
    problems = []
    for name, expected in wanted.items():
        if not expected:
            continue
        actual = found[name]
        # Python is promised as major.minor by the base; packages exactly by the lock.
        if (leading(actual, 2) if name == "python" else actual) != expected:
            problems.append(f"{name} is {actual}, the lock/base promised {expected}")
    if problems:
        raise EnvironmentMismatch("; ".join(problems))
    return found


def check_cuda() -> dict:
    import tensorflow as tf

    build = dict(tf.sysconfig.get_build_info())
    if not build.get("is_cuda_build"):
        raise EnvironmentMismatch(f"TensorFlow {tf.__version__} in this image is not a CUDA build")
    report = {"build_info": {k: str(v) for k, v in sorted(build.items())}, "wheels": {}}
    problems, matched = [], set()
    for distribution, key, parts in CUDA_WHEELS:
        version = installed(distribution)
        if version is None:
            continue
        report["wheels"][distribution] = version
        wanted = str(build.get(key, ""))
        if leading(version, parts) != leading(wanted, parts):
            problems.append(f"{distribution} {version} does not match TensorFlow's {key} {wanted}")
        matched.add(key)
    for key in ("cuda_version", "cudnn_version"):
        if key not in matched:
            problems.append(f"no CUDA wheel provides {key} {build.get(key)} (is the and-cuda extra in the lock?)")
    libraries = {}
    for pattern in ("libcudart.so.*", "libcudnn.so.*", "libcublas.so.*"):
        hits = sorted(glob.glob(os.path.join(sys.prefix, "lib", "python*", "site-packages", "nvidia", "*", "lib", pattern)))
        if not hits:
            problems.append(f"{pattern} is not in the image's nvidia wheels")
        libraries[pattern] = [os.path.basename(h) for h in hits]
    report["libraries"] = libraries
    if problems:
        raise EnvironmentMismatch("; ".join(problems))
    return report


def smoke() -> dict:
    import tensorflow as tf

    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    a = tf.constant([[1.0, 2.0], [3.0, 4.0]])
    value = tf.linalg.matmul(a, a).numpy().tolist()
    if value != [[7.0, 10.0], [15.0, 22.0]]:
        raise EnvironmentMismatch(f"a 2x2 matmul gave {value}")
    return {"gpus": gpus, "matmul": "ok", "device": "GPU" if gpus else "CPU"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULES['env-check']}", description=__doc__)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--expect-python")
    parser.add_argument("--expect-tensorflow")
    parser.add_argument("--expect-numpy")
    parser.add_argument("--expect-machine", help="uname -m the base promised (x86_64, aarch64)")
    parser.add_argument("--forbid", action="append", default=[],
                        help="a module that must NOT be importable here (e.g. tf_slim in inference)")
    args = parser.parse_args(argv)
    try:
        report = {"versions": check_versions(args.expect_python, args.expect_tensorflow, args.expect_numpy,
                                               args.expect_machine)}
        for module in args.forbid:
            try:
                __import__(module)
            except ImportError:
                continue
            raise EnvironmentMismatch(f"{module} is importable, but this image must not contain it")
        report["device"] = args.device
        if args.device == "cuda":
            report["cuda"] = check_cuda()
        report["smoke"] = smoke()
    except EnvironmentMismatch as error:
        print(error_line(f"environment check failed: {error}"), file=sys.stderr)
        return Exit.USAGE
    json.dump(report, sys.stdout, indent=2, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
