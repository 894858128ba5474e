"""Reading the classic builder's log: which images ended the build's earlier stages (no daemon)."""

from __future__ import annotations

import pytest

from coldchain.engine.docker import _split_tag, earlier_stage_images

TRAIN_LOG = """\
Step 1/32 : ARG BASE_IMAGE=python:3.11-slim-bookworm
Step 2/32 : FROM ${BASE_IMAGE} AS install
 ---> cdf30ec9606a
Step 3/32 : ARG LOCK=requirements.lock
 ---> Using cache
 ---> 80135415d39e
Step 4/32 : COPY ${LOCK} /tmp/coldchain/requirements.lock
 ---> Using cache
 ---> 5361aa83860e
Step 5/32 : COPY wheels/ /tmp/coldchain/wheels/
 ---> 44cc5eb8e27f
Step 6/32 : RUN python3 -m venv /opt/venv && pip install ...
 ---> Running in 3b1f0c2d9a77
Removing intermediate container 3b1f0c2d9a77
 ---> 995d7f8a4d5f
Step 7/32 : FROM ${BASE_IMAGE}
 ---> cdf30ec9606a
Step 8/32 : ARG DEVICE=cpu
 ---> Running in 0aa1bb2cc3dd
 ---> 9c771c9bcb76
Step 13/32 : COPY --from=install /opt/venv /opt/venv
 ---> 2ae712f9bb4e
Successfully built 2ae712f9bb4e
""".splitlines()


def test_the_install_stage_is_found_and_bases_are_not():
    assert earlier_stage_images(TRAIN_LOG, finished=True) == ["995d7f8a4d5f"]


def test_a_failed_build_also_gives_the_stage_that_failed():
    failed_in_install = TRAIN_LOG[:TRAIN_LOG.index("Step 6/32 : RUN python3 -m venv /opt/venv && pip install ...") + 3]
    assert earlier_stage_images(failed_in_install, finished=False) == ["44cc5eb8e27f"]
    assert earlier_stage_images(TRAIN_LOG, finished=False) == ["995d7f8a4d5f", "2ae712f9bb4e"]


def test_a_stage_that_is_only_a_from_is_never_removed():
    """Dockerfile.opbuild's first stage is the training image itself."""
    opbuild = ["Step 1/12 : ARG TRAIN_IMAGE=coldchain-train:cpu", "Step 3/12 : FROM ${TRAIN_IMAGE} AS training",
               " ---> f79eeab63cee", "Step 4/12 : FROM ${BASE_IMAGE}", " ---> 575b4f5f513b",
               "Step 5/12 : COPY --from=training /opt/venv /opt/venv", " ---> 1234567890ab"]
    assert earlier_stage_images(opbuild, finished=True) == []
    assert earlier_stage_images(opbuild, finished=False) == ["1234567890ab"]
    assert earlier_stage_images(["Step 1/2 : FROM scratch", " ---> ", "Step 2/2 : COPY a b"], finished=False) == []


@pytest.mark.parametrize("ref, expected", [
    ("coldchain-infer:cpu", ("coldchain-infer", "cpu")),
    ("127.0.0.1:5000/coldchain-infer:cpu", ("127.0.0.1:5000/coldchain-infer", "cpu")),
    ("127.0.0.1:5000/coldchain-infer", ("127.0.0.1:5000/coldchain-infer", "latest")),
    ("plain", ("plain", "latest")),
])
def test_a_registry_port_is_not_taken_for_the_tag(ref, expected):
    assert _split_tag(ref) == expected
