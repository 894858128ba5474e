"""The CUDA images: same pins as the CPU ones plus the CUDA/cuDNN wheels TF 2.14 was built
against, checked at build time, and able to run on a host without a GPU."""

from __future__ import annotations

import json

import pytest

from coldchain.config import IMAGES, KIT_LABEL
from coldchain.engine import RunSpec
from coldchain.environments.images import BuildOptions, build_images

pytestmark = [pytest.mark.docker, pytest.mark.cuda]


@pytest.fixture(scope="session")
def cuda_images(docker_engine, project, run_id, session_tags):
    specs = [IMAGES["train-cuda"], IMAGES["infer-cuda"]]
    session_tags.extend(spec.tag(run_id) for spec in specs)
    return {built.spec.name: built for built in build_images(docker_engine, project, specs, BuildOptions(prefix=run_id))}


def run(engine, image, *command, gpus=False):
    return engine.run(RunSpec(image=image, command=command, gpus=gpus, labels={KIT_LABEL: "coldchain"}))


def test_cuda_libraries_match_tensorflow_build_info(docker_engine, cuda_images):
    for built in cuda_images.values():
        assert built.info.labels["io.coldchain.device"] == "cuda"
        result = run(docker_engine, built.tag, "cat", "/opt/coldchain/environment.json")
        cuda = json.loads(result.stdout)["cuda"]
        assert cuda["build_info"]["cuda_version"] == "11.8"
        assert cuda["wheels"]["nvidia-cuda-runtime-cu11"].startswith("11.8.")
        assert cuda["wheels"]["nvidia-cudnn-cu11"].split(".")[0] == cuda["build_info"]["cudnn_version"].split(".")[0]
        assert cuda["libraries"]["libcudnn.so.*"]


def test_cuda_image_computes_on_the_device_docker_offers_it(docker_engine, cuda_images):
    """On a host whose Docker has the NVIDIA runtime the matmul runs on the GPU; on one without (this
    project's machines) the same image runs it on the CPU. The device is asserted, not skipped."""
    has_gpu = docker_engine.gpu_runtime()
    program = ("import tensorflow as tf; x = tf.reshape(tf.range(9, dtype=tf.float32), [3, 3]); "
               "y = tf.linalg.matmul(x, x); print(float(tf.reduce_sum(y)), y.device)")
    result = run(docker_engine, cuda_images["infer-cuda"].tag, "python", "-c", program, gpus=has_gpu)
    assert result.exit_code == 0, result.stderr[-2000:]
    total, device = result.stdout.split()
    assert float(total) == 486.0  # sum of x @ x for x = 0..8 as 3x3
    assert device.endswith("GPU:0" if has_gpu else "CPU:0"), device
