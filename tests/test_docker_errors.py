"""Docker's errors become the kit's, without a daemon: an API refusal is an EngineError naming what
was asked, a broken connection is the daemon going away, and cleanup never hides the real outcome."""

from __future__ import annotations

import pytest
import requests
from docker.errors import APIError, NotFound

from coldchain.engine import RunSpec
from coldchain.engine.docker import DockerEngine
from coldchain.errors import BuildError, DaemonUnavailable, EngineError


class Response:
    def __init__(self, status: int, reason: str):
        self.status_code, self.reason, self.url = status, reason, "http://docker/x"

    def json(self):
        return {"message": self.reason}


def refusing(status: int, text: str):
    def raise_it(*args, **kwargs):
        raise APIError(text, response=Response(status, text), explanation=text)
    return raise_it


def engine_with(client) -> DockerEngine:
    engine = DockerEngine.__new__(DockerEngine)
    engine.client = engine.long_client = client
    return engine


class Images:
    get = staticmethod(refusing(500, "layer does not exist"))
    remove = staticmethod(refusing(409, "image is being used by running container abc"))
    list = staticmethod(lambda **kwargs: (_ for _ in ()).throw(requests.exceptions.ConnectionError("socket closed")))


class Client:
    images = Images()


def test_api_refusals_are_engine_errors_naming_the_request():
    engine = engine_with(Client())
    with pytest.raises(EngineError) as caught:
        engine.inspect_image("coldchain-infer:cpu")
    assert "inspect image coldchain-infer:cpu" in caught.value.message and "layer does not exist" in caught.value.message
    with pytest.raises(EngineError) as caught:
        engine.remove_image("sha256:abc")
    assert "being used" in caught.value.message and "make clean" in caught.value.fix  # a 409, as in clean --all


def test_a_broken_connection_is_the_daemon_going_away():
    with pytest.raises(DaemonUnavailable) as caught:
        engine_with(Client()).list_images("io.coldchain.kit")
    assert "went away" in caught.value.message and "make docker" in caught.value.fix


class FailingContainer:
    short_id = "c0ffee"

    def start(self):
        raise APIError("cannot start", response=Response(500, "cannot start"), explanation="OCI runtime error")

    def remove(self, force=False):
        raise APIError("removal in progress", response=Response(409, "removal in progress"),
                       explanation="removal of container c0ffee is already in progress")


class RunClient:
    class containers:
        @staticmethod
        def create(image, **kwargs):
            return FailingContainer()

        @staticmethod
        def list(**kwargs):
            return [FailingContainer()]


def test_cleanup_errors_never_hide_the_real_one(caplog):
    engine = engine_with(RunClient())
    with pytest.raises(EngineError) as caught:
        engine.run(RunSpec(image="img", command=("python", "-m", "x")))
    assert "OCI runtime error" in caught.value.message, "the start failure, not the 409 of the cleanup after it"
    assert "already in progress" in caplog.text, "the cleanup failure is logged"
    assert engine.remove_containers("io.coldchain.kit") == 0  # a 409 while removing is reported, not raised


def test_an_image_that_is_gone_is_none_not_an_error():
    class Gone:
        class images:
            @staticmethod
            def get(ref):
                raise NotFound("no such image")
    assert engine_with(Gone()).inspect_image("nothing:here") is None


class DiskFullClient:
    """A build whose RUN step fails the way pip does when the daemon's disk fills up."""

    class api:
        @staticmethod
        def build(**kwargs):
            yield {"stream": "Step 2/9 : RUN pip install -r requirements.lock\n"}
            yield {"stream": "ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device\n"}
            yield {"error": "The command '/bin/sh -c pip install' returned a non-zero code: 1"}

    @staticmethod
    def info():
        return {"DockerRootDir": "/"}


def test_a_full_disk_during_a_build_says_so_with_the_free_space_and_the_fix(tmp_path):
    context = tmp_path / "context.tar"
    context.write_bytes(b"")
    with pytest.raises(BuildError) as caught:
        engine_with(DiskFullClient()).build(context, dockerfile="Dockerfile.train", buildargs={}, labels={},
                                            tag="coldchain-train:cuda", log=lambda line: None, keep_stages=True)
    assert "disk is full" in caught.value.message and "GB free now" in caught.value.message
    assert "make clean" in caught.value.fix
    assert "No space left on device" in caught.value.log_tail


class VanishingApi:
    """Two containers listed; the first is auto-removed before docker-py inspects it, as a run's own
    cleanup does while another run sweeps."""

    def __init__(self):
        self.removed = []

    def containers(self, **kwargs):
        return [{"Id": "gone"}, {"Id": "kept"}]

    def inspect_container(self, container_id):
        if container_id == "gone":
            raise NotFound(f"No such container: {container_id}")
        return {"Id": container_id, "Config": {"Labels": {"io.coldchain.pid": "1"}}}

    def remove_container(self, container_id, **kwargs):
        self.removed.append(container_id)


class VanishingClient:
    def __init__(self):
        from docker.models.containers import ContainerCollection
        self.api = VanishingApi()
        self.containers = ContainerCollection(client=self)


def test_a_container_removed_while_listing_is_left_out_not_an_error():
    engine = engine_with(VanishingClient())
    assert [c.id for c in engine.list_containers("io.coldchain.pid")] == ["kept"]
    assert engine.remove_containers("io.coldchain.pid") == 1 and engine.client.api.removed == ["kept"]
