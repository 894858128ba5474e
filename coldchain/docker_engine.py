"""Engine implementation over the Docker SDK for Python."""

from __future__ import annotations

import logging
import re
from collections import deque
from pathlib import Path

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from .engine import Engine, ImageInfo, LogSink, RunResult, RunSpec
from .errors import BaseImageError, BuildError, ContainerError, DaemonUnavailable

log = logging.getLogger(__name__)
LOG_TAIL_LINES = 40
DAEMON_FIX = "run 'make docker' (scripts/ensure-docker.sh), which starts or installs a daemon where it can"


_FROM_STEP = re.compile(r"^Step \d+/\d+ : FROM\b", re.IGNORECASE)
_STEP_IMAGE = re.compile(r"^\s*---> ([0-9a-f]{12,64})\s*$")


def earlier_stage_images(lines: list[str], *, finished: bool) -> list[str]:
    """The (short) image IDs that ended each build stage but the final one, read from the classic
    builder's log; with `finished` False (a failed build) the stage that failed is included.
    FROM images (bases, other kit images) are never among them."""
    tips: list[str] = []
    from_images: set[str] = set()
    current = None
    stages = 0
    after_from = False
    for line in lines:
        if _FROM_STEP.match(line.strip()):
            if stages and current:
                tips.append(current)
            stages += 1
            current, after_from = None, True
            continue
        match = _STEP_IMAGE.match(line)
        if match:
            if after_from:
                from_images.add(match.group(1))
                after_from = False
            current = match.group(1)
    if not finished and current:
        tips.append(current)
    return [tip for tip in dict.fromkeys(tips) if tip not in from_images]


def _info(image) -> ImageInfo:
    attrs = image.attrs
    return ImageInfo(id=image.id, tags=tuple(image.tags), labels=dict(attrs["Config"].get("Labels") or {}),
                     size=int(attrs.get("Size", 0)))


class DockerEngine(Engine):
    def __init__(self, timeout: int = 600):
        try:
            self.client = docker.from_env(timeout=timeout)
        except DockerException as error:
            raise DaemonUnavailable(f"no Docker daemon answers: {error}", fix=DAEMON_FIX) from None

    def ping(self) -> str:
        try:
            return self.client.version()["Version"]
        except (DockerException, OSError) as error:
            raise DaemonUnavailable(f"no Docker daemon answers: {error}", fix=DAEMON_FIX) from None

    def inspect_image(self, ref: str) -> ImageInfo | None:
        try:
            return _info(self.client.images.get(ref))
        except ImageNotFound:
            return None

    def pull(self, ref: str) -> ImageInfo:
        try:
            return _info(self.client.images.pull(ref))
        except (APIError, DockerException) as error:
            raise BaseImageError(f"could not pull {ref}: {error.explanation if hasattr(error, 'explanation') else error}",
                                 fix="check the registry, or let coldchain build a local base") from None

    def import_rootfs(self, tarball: Path, ref: str, changes: list[str]) -> ImageInfo:
        repository, _, tag = ref.partition(":")
        with tarball.open("rb") as handle:
            self.client.api.import_image_from_data(handle, repository=repository, tag=tag or "latest", changes=changes)
        found = self.inspect_image(ref)
        if found is None:
            raise BaseImageError(f"docker import of {tarball} did not produce {ref}")
        return found

    def build(self, context: Path, *, dockerfile: str, buildargs: dict[str, str],
              labels: dict[str, str], tag: str, log: LogSink, nocache: bool = False,
              keep_stages: bool = False) -> ImageInfo:
        steps: list[str] = []  # the Step and ---> lines: which image ended which stage
        finished = False
        try:
            image_id = self._build(context, dockerfile=dockerfile, buildargs=buildargs, labels=labels, tag=tag,
                                   log=log, nocache=nocache, steps=steps)
            self.tag(image_id, tag)
            finished = True
        finally:
            if not keep_stages:
                self._remove_stage_images(earlier_stage_images(steps, finished=finished), tag)
        return self.inspect_image(tag)  # type: ignore[return-value]

    def _build(self, context: Path, *, dockerfile: str, buildargs: dict[str, str], labels: dict[str, str],
               tag: str, log: LogSink, nocache: bool, steps: list[str]) -> str:
        tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        image_id = None
        try:
            with context.open("rb") as handle:
                stream = self.client.api.build(fileobj=handle, custom_context=True, dockerfile=dockerfile,
                                               buildargs=buildargs, labels=labels, rm=True, forcerm=True,
                                               pull=False, decode=True, nocache=nocache,
                                               network_mode="none")
                for event in stream:
                    if "stream" in event:
                        for line in event["stream"].splitlines():
                            if line.strip():
                                tail.append(line)
                                log(line)
                                if "--->" in line or line.startswith("Step "):
                                    steps.append(line)
                    if "aux" in event and "ID" in event["aux"]:
                        image_id = event["aux"]["ID"]
                    if "error" in event:
                        tail.append(event["error"].strip())
                        raise BuildError(f"building {tag} failed: {event['error'].strip().splitlines()[-1]}",
                                         image=tag, log_tail="\n".join(tail),
                                         fix="read the log tail above; the failing step is its last 'Step' line")
        except (APIError, DockerException, OSError) as error:
            # requests' errors (APIError included) are OSErrors too: look at what the daemon said first.
            if "no space left on device" in str(error):
                raise BuildError(f"building {tag} failed: the Docker host's disk is full", image=tag,
                                 log_tail="\n".join(tail + [str(error)]),
                                 fix="free space: 'docker image prune' removes dangling images, 'make clean' the "
                                     "kit's images; then rerun") from None
            if isinstance(error, APIError):
                raise BuildError(f"building {tag} failed: {error}", image=tag, log_tail="\n".join(tail)) from None
            raise DaemonUnavailable(f"the Docker daemon went away while building {tag}: {error}",
                                    fix=DAEMON_FIX + "; then rerun, finished layers are cached") from None
        if image_id is None:
            raise BuildError(f"building {tag} produced no image", image=tag, log_tail="\n".join(tail))
        return image_id

    def _remove_stage_images(self, short_ids: list[str], tag: str) -> None:
        """The install stage holds the wheels and a second copy of the venv (7.6 GB for a CUDA lock);
        the image needs neither. Only untagged images go, with their untagged parents; one another
        build still uses is left alone (Docker refuses, and the next build cleans it up)."""
        for short_id in short_ids:
            try:
                image = self.client.api.inspect_image(short_id)
                if image.get("RepoTags"):
                    continue
                self.client.api.remove_image(image["Id"], force=False, noprune=False)
                log.debug("removed build stage %s of %s", short_id, tag)
            except (APIError, DockerException, OSError) as error:
                log.debug("kept build stage %s of %s: %s", short_id, tag, error)

    def tag(self, image_id: str, ref: str) -> None:
        repository, _, tag = ref.partition(":")
        self.client.api.tag(image_id, repository, tag or "latest", force=True)

    def run(self, spec: RunSpec, log: LogSink | None = None) -> RunResult:
        kwargs = dict(
            command=list(spec.command), detach=True, environment=spec.environment,
            network_mode=spec.network, read_only=spec.read_only_root, tmpfs=spec.tmpfs,
            volumes={str(m.source): {"bind": m.target, "mode": "ro" if m.read_only else "rw"} for m in spec.mounts},
            labels=spec.labels, name=spec.name, cap_drop=["ALL"], security_opt=["no-new-privileges"],
            mem_limit=spec.mem_limit, pids_limit=spec.pids_limit,
        )
        if spec.user:
            kwargs["user"] = spec.user
        if spec.gpus:
            kwargs["device_requests"] = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
        container = None
        try:
            container = self.client.containers.create(spec.image, **kwargs)
            container.start()
            if log is not None:
                pending = b""
                for chunk in container.logs(stdout=False, stderr=True, stream=True, follow=True):
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        log(line.decode(errors="replace"))
                if pending:
                    log(pending.decode(errors="replace"))
            status = container.wait()
            stdout = container.logs(stdout=True, stderr=False).decode(errors="replace")
            stderr = container.logs(stdout=False, stderr=True).decode(errors="replace")
            container.reload()
            oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
            return RunResult(int(status.get("StatusCode", -1)), stdout, stderr, oom)
        except ImageNotFound:
            raise ContainerError(f"image {spec.image} does not exist", image=spec.image,
                                 command=list(spec.command), container_exit=-1,
                                 fix="build it first ('make images')") from None
        except APIError as error:
            raise ContainerError(f"running {spec.image} failed: {error}", image=spec.image,
                                 command=list(spec.command), container_exit=-1) from None
        except (DockerException, OSError) as error:
            # The connection itself broke: the daemon stopped or died while the container ran.
            raise DaemonUnavailable(f"the Docker daemon went away while running {' '.join(spec.command[:4])}: {error}",
                                    fix=DAEMON_FIX + "; then rerun: finished steps are kept, this one starts "
                                                     "again (its partial output was never moved into place)") from None
        finally:
            if container is not None:
                try:
                    container.remove(force=True)
                except (NotFound, APIError, DockerException, OSError):
                    pass

    def remove_image(self, ref: str) -> None:
        try:
            self.client.images.remove(ref, force=True)
        except ImageNotFound:
            pass

    def list_images(self, label: str) -> list[ImageInfo]:
        return [_info(image) for image in self.client.images.list(filters={"label": label})]

    def remove_containers(self, label: str) -> int:
        containers = self.client.containers.list(all=True, filters={"label": label})
        for container in containers:
            container.remove(force=True)
        return len(containers)

    def gpu_runtime(self) -> bool:
        try:
            runtimes = self.client.info().get("Runtimes", {})
        except DockerException:
            return False
        return "nvidia" in runtimes
