"""An in-memory Engine for unit tests: records what was asked, builds nothing; and the real DockerEngine
over a fake SDK client that hands out one container, for the engine's own waiting and cleanup."""

from __future__ import annotations

import hashlib
from pathlib import Path

from coldchain.engine import Engine, ImageInfo, RunResult, RunSpec
from coldchain.errors import BaseImageError, BuildError


class FakeEngine(Engine):
    def __init__(self, *, registry: bool = False, python_version: str = "3.11.2", fail_build: str | None = None):
        self.images: dict[str, ImageInfo] = {}
        self.registry = registry
        self.pulls: list[str] = []
        self.python_version = python_version
        self.fail_build = fail_build
        self.builds: list[dict] = []
        self.labelled: list[str] = []  # tags given their file record's label after the build
        self.runs: list[RunSpec] = []
        self.imports: list[str] = []
        self.removed: list[str] = []  # image ids removed because nothing named them any more
        self.in_use: set[str] = set()  # image ids a container still uses
        self.disk = None
        self.registry_images: dict[str, ImageInfo] = {}  # name@digest -> image, as pushed  # a DiskSpace, to act like a local daemon
        self.containers: dict = {}  # id -> ContainerInfo: containers left on the daemon
        self.run_handler = None  # callable(RunSpec) -> RunResult, to act like a container

    def _store(self, ref: str, labels: dict[str, str] | None = None) -> ImageInfo:
        # The id follows the content, as Docker's does: a base with another python3 is another image.
        content = ref.encode() + repr(sorted((labels or {}).items())).encode() + self.python_version.encode()
        info = ImageInfo(id="sha256:" + hashlib.sha256(content).hexdigest(),
                         tags=(ref,), labels=dict(labels or {}), size=123)
        self.images[ref] = info
        return info

    def ping(self) -> str:
        return "fake"

    def inspect_image(self, ref: str) -> ImageInfo | None:
        return self.images.get(ref)

    def pull(self, ref: str) -> ImageInfo:
        self.pulls.append(ref)
        if not self.registry:
            raise BaseImageError(f"could not pull {ref}: no registry")
        return self._store(ref)

    def import_rootfs(self, tarball: Path, ref: str, changes: list[str]) -> ImageInfo:
        self.imports.append(ref)
        return self._store(ref)

    def build(self, context: Path, *, dockerfile, buildargs, labels, tag, log, nocache=False,
              keep_stages=False, platform=None) -> ImageInfo:
        if self._labelling(context):
            # files_record.label_with_record: a label-only build on the image just built; Docker keeps the
            # unlabelled one as its hidden parent, not as a nameless image.
            self.labelled.append(tag)
            return self._store(tag, labels)
        self.builds.append({"context": context.read_bytes(), "dockerfile": dockerfile, "buildargs": buildargs,
                            "labels": labels, "tag": tag, "keep_stages": keep_stages, "nocache": nocache,
                            "platform": platform})
        if self.fail_build:
            raise BuildError(f"building {tag} failed", image=tag, log_tail=self.fail_build)
        if tag in self.images and not any(ref != tag and info.id == self.images[tag].id
                                           for ref, info in self.images.items()):
            self.supersede(tag)
        return self._store(tag, labels)

    @staticmethod
    def _labelling(context: Path) -> bool:
        import tarfile
        with tarfile.open(context) as archive:
            names = archive.getnames()
            return names == ["Dockerfile"] and archive.extractfile("Dockerfile").read().startswith(b"FROM sha256:")

    def tag(self, image_id: str, ref: str) -> None:
        source = next(info for info in self.images.values() if info.id == image_id)
        self.images[ref] = source

    def run(self, spec: RunSpec, log=None) -> RunResult:
        self.runs.append(spec)
        if self.run_handler is not None:
            return self.run_handler(spec)
        if spec.command[:1] == ("sha256sum",):  # the file record's digest (environments/files_record.py)
            return RunResult(0, hashlib.sha256(spec.image.encode()).hexdigest() + "  " + spec.command[-1] + "\n", "")
        return RunResult(0, self.python_version + "\n", "")

    def remove_image(self, ref: str) -> None:
        self.images.pop(ref, None)

    def remove_unused_image(self, image_id: str) -> bool:
        if any(info.id == image_id and info.tags for info in self.images.values()) or image_id in self.in_use:
            return False
        self.images = {ref: info for ref, info in self.images.items() if info.id != image_id}
        self.removed.append(image_id)
        return True

    def supersede(self, ref: str) -> ImageInfo:
        """What Docker does to an image whose only tag moved to another: it keeps it, nameless."""
        old = self.images[ref]
        nameless = ImageInfo(old.id, (), old.labels, old.size)
        self.images[f"<none>@{old.id}"] = nameless
        return nameless

    def disk_free(self):
        return self.disk

    def save_images(self, refs, destination: Path) -> None:
        import json
        destination.write_text(json.dumps([[ref, self.images[ref].id, self.images[ref].labels] for ref in refs]))

    def load_images(self, source: Path) -> list[str]:
        import json
        loaded = []
        for ref, image_id, labels in json.loads(source.read_text()):
            self.images[ref] = ImageInfo(image_id, (ref,), labels, 123)
            loaded.append(ref)
        return loaded

    def push(self, ref: str) -> str:
        info = self.images[ref]
        self.registry_images[ref.rsplit(":", 1)[0] + "@sha256:" + info.id[-64:]] = info
        return "sha256:" + info.id[-64:]

    def pull_digest(self, ref: str) -> ImageInfo:
        from coldchain.errors import EngineError
        if ref not in self.registry_images:
            raise EngineError(f"the registry has no {ref}")
        info = self.registry_images[ref]
        self.images[ref] = info
        return info

    def list_images(self, label: str) -> list[ImageInfo]:
        key, has_value, value = label.partition("=")
        found = {info.id: info for info in self.images.values()
                 if key in info.labels and (not has_value or info.labels[key] == value)}
        return list(found.values())

    def remove_containers(self, label: str) -> int:
        return 0

    def list_containers(self, label: str) -> list:
        key, has_value, value = label.partition("=")
        return [info for info in self.containers.values()
                if key in info.labels and (not has_value or info.labels[key] == value)]

    def remove_container(self, container_id: str) -> None:
        self.containers.pop(container_id, None)

    def gpu_runtime(self) -> bool:
        return False


def docker_engine_with(container):
    """The real DockerEngine whose SDK clients (ordinary and long) create `container` and nothing else."""
    from coldchain.engine.docker import DockerEngine

    class Client:
        class containers:
            @staticmethod
            def create(image, **kwargs):
                return container

    engine = DockerEngine.__new__(DockerEngine)
    engine.client = engine.long_client = Client()
    return engine


def found_images(engine, project, specs, options):
    """A build_images stand-in: every image already there, TF 2.14.1 on Python 3.11.2 by its labels."""
    from types import SimpleNamespace

    return [SimpleNamespace(spec=spec, tag=f"{options.prefix}-{spec.name}", reused=True, info=ImageInfo(
        id=f"sha256:{spec.name}", tags=(), size=7, labels={"io.coldchain.tensorflow.version": "2.14.1",
                                                           "io.coldchain.python.version": "3.11.2"}))
            for spec in specs]
