"""The Engine over the Docker SDK for Python: every Docker error becomes one of the kit's errors, every
container has a time limit, and cleanup never hides the error that caused it."""

from __future__ import annotations

import functools
import logging
import math
import re
import shutil
import threading
import time
from collections import deque
from pathlib import Path

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from ..errors import BaseImageError, BuildError, ContainerError, DaemonUnavailable, EngineError
from ..owner import Owner
from .engine import CALL_TIMEOUT_S, ContainerInfo, DiskSpace, Engine, ImageInfo, LogSink, RunResult, RunSpec

log = log_module = logging.getLogger(__name__)  # `log` is also run()'s parameter: the container's sink
LOG_TAIL_LINES = 40
# One read of a build's, a load's or a push's stream (a wheel install may be silent for minutes).
LONG_TIMEOUT_S = 3600
# A container with a time limit: the host waits for its end this long past the limit (the watchdog's
# kill included) before it calls the daemon stalled; inside, coreutils `timeout` ends the command
# this long past the limit too, so a host process that died cannot leave it running.
GRACE_S = 60
KILL_AFTER_S = 10  # `timeout`'s SIGKILL after its SIGTERM
TIMEOUT_EXIT = 124  # coreutils `timeout`: the limit passed
NO_SPACE = "no space left on device"
DAEMON_FIX = "run 'make docker' (scripts/ensure-docker.sh), which starts or installs a daemon where it can"
STALLED_FIX = "restart the Docker daemon ('systemctl restart docker', or 'make docker'), then rerun"


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


def _split_tag(ref: str) -> tuple[str, str]:
    """("host:port/name", "tag"): the tag follows the last colon after the last slash."""
    if ":" in ref.rsplit("/", 1)[-1]:
        repository, _, tag = ref.rpartition(":")
        return repository, tag
    return ref, "latest"


def _info(image) -> ImageInfo:
    attrs = image.attrs
    return ImageInfo(id=image.id, tags=tuple(image.tags), labels=dict(attrs["Config"].get("Labels") or {}),
                     size=int(attrs.get("Size", 0)))


def _translated(what: str):
    """Docker's errors as the kit's: a broken connection is the daemon going away, an API refusal
    an EngineError naming what was asked and what Docker said."""
    def decorate(method):
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except (ImageNotFound, NotFound):
                raise
            except APIError as error:
                raise EngineError(f"Docker refused to {what} {_subject(args)}: {_explanation(error)}",
                                  fix=_fix_for(error)) from error
            except (DockerException, OSError) as error:
                raise DaemonUnavailable(f"the Docker daemon went away while asked to {what} {_subject(args)}: "
                                        f"{error}", fix=DAEMON_FIX) from error
        return wrapper
    return decorate


def _subject(args) -> str:
    return str(args[0]) if args else ""


def _explanation(error: APIError) -> str:
    return str(getattr(error, "explanation", None) or error)


def _fix_for(error: APIError) -> str:
    text = _explanation(error).lower()
    if "no space left" in text:
        return "free space: 'docker image prune' removes dangling images, 'make clean' the kit's images; then rerun"
    if getattr(error, "status_code", None) == 409:
        return "another container or image still uses it (or is being removed): wait, then rerun 'make clean'"
    return "read Docker's explanation above; 'docker info' shows the daemon's state"


def container_kwargs(spec: RunSpec) -> dict:
    """docker-py's create() arguments for `spec`: hardened, labelled with the owner (the start-up sweep's
    mark), and a command with a time limit run under coreutils `timeout` at the limit plus GRACE_S, so
    the limit holds inside the container even when the host process that watches it is gone."""
    command = list(spec.command)
    if spec.timeout_s:
        command = ["timeout", f"--kill-after={KILL_AFTER_S}", str(math.ceil(spec.timeout_s + GRACE_S)), *command]
    kwargs = dict(
        command=command, detach=True, environment=spec.environment,
        network_mode=spec.network, read_only=spec.read_only_root, tmpfs=spec.tmpfs,
        # A list, not docker-py's volumes dict: one host directory may be mounted at two places.
        mounts=[docker.types.Mount(m.target, str(m.source), type="bind", read_only=m.read_only) for m in spec.mounts],
        labels={**spec.labels, **Owner.current().labels()}, name=spec.name, cap_drop=["ALL"],
        security_opt=["no-new-privileges"], mem_limit=spec.mem_limit, pids_limit=spec.pids_limit,
        hostname=spec.hostname,
    )
    if spec.user:
        kwargs["user"] = spec.user
    if spec.platform:
        kwargs["platform"] = spec.platform
    if spec.gpus:
        kwargs["device_requests"] = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
    return kwargs


def _secondary(what: str, action) -> None:
    """Cleanup after the real work: its failure is logged, never raised over the original outcome."""
    try:
        action()
    except (APIError, DockerException, OSError) as error:
        log.warning("cleanup: could not %s: %s", what, error)


class DockerEngine(Engine):
    """Two clients: `client` for ordinary calls, which a stalled daemon ends after CALL_TIMEOUT_S, and
    `long_client` for the calls that stream for long (build, save, load, push, pull, a log stream)."""

    def __init__(self, timeout: float = CALL_TIMEOUT_S, long_timeout: float = LONG_TIMEOUT_S):
        self.timeout = timeout
        try:
            self.client = docker.from_env(timeout=timeout)
            # The API version the first client asked for: the long client must not ask again (a stalled
            # daemon would hold that question for the long timeout).
            self.long_client = docker.from_env(timeout=long_timeout, version=self.client.api.api_version)
        except (DockerException, OSError) as error:
            raise self._unanswered(error) from None

    def ping(self) -> str:
        try:
            return self.client.version()["Version"]
        except (DockerException, OSError) as error:
            raise self._unanswered(error) from None

    def _unanswered(self, error: Exception) -> DaemonUnavailable:
        """No daemon, or one that accepts the connection and then says nothing (stopped, or hung)."""
        if "timed out" in str(error).lower():
            return DaemonUnavailable(f"the Docker daemon did not answer within {self.timeout:g} s: it accepts "
                                     f"connections but has stalled ({error})", fix=STALLED_FIX)
        return DaemonUnavailable(f"no Docker daemon answers: {error}", fix=DAEMON_FIX)

    @_translated("inspect image")
    def inspect_image(self, ref: str) -> ImageInfo | None:
        try:
            return _info(self.client.images.get(ref))
        except (ImageNotFound, NotFound):
            return None

    def pull(self, ref: str) -> ImageInfo:
        try:
            return _info(self.long_client.images.pull(ref))
        except (APIError, DockerException) as error:
            raise BaseImageError(f"could not pull {ref}: {error.explanation if hasattr(error, 'explanation') else error}",
                                 fix="check the registry, or let coldchain build a local base") from None

    @_translated("import a root filesystem as")
    def import_rootfs(self, tarball: Path, ref: str, changes: list[str]) -> ImageInfo:
        repository, tag = _split_tag(ref)
        with tarball.open("rb") as handle:
            self.long_client.api.import_image_from_data(handle, repository=repository, tag=tag, changes=changes)
        found = self.inspect_image(ref)
        if found is None:
            raise BaseImageError(f"docker import of {tarball} did not produce {ref}")
        return found

    def build(self, context: Path, *, dockerfile: str, buildargs: dict[str, str],
              labels: dict[str, str], tag: str, log: LogSink, nocache: bool = False,
              keep_stages: bool = False, platform: str | None = None) -> ImageInfo:
        steps: list[str] = []  # the Step and ---> lines: which image ended which stage
        finished = False
        try:
            image_id = self._build(context, dockerfile=dockerfile, buildargs=buildargs, labels=labels, tag=tag,
                                   log=log, nocache=nocache, steps=steps, platform=platform)
            self.tag(image_id, tag)
            finished = True
        finally:
            if not keep_stages:
                self._remove_stage_images(earlier_stage_images(steps, finished=finished), tag)
        info = self.inspect_image(tag)
        if info is None:
            raise BuildError(f"building {tag} reported success but the image is gone", image=tag)
        return info

    def _build(self, context: Path, *, dockerfile: str, buildargs: dict[str, str], labels: dict[str, str],
               tag: str, log: LogSink, nocache: bool, steps: list[str], platform: str | None = None) -> str:
        tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        image_id = None
        try:
            with context.open("rb") as handle:
                stream = self.long_client.api.build(fileobj=handle, custom_context=True, dockerfile=dockerfile,
                                               buildargs=buildargs, labels=labels, rm=True, forcerm=True,
                                               pull=False, decode=True, nocache=nocache,
                                               network_mode="none", platform=platform)
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
                        if any(NO_SPACE in line.lower() for line in tail):
                            raise self._disk_full(tag, tail)
                        raise BuildError(f"building {tag} failed: {event['error'].strip().splitlines()[-1]}",
                                         image=tag, log_tail="\n".join(tail),
                                         fix="read the log tail above; the failing step is its last 'Step' line")
        except (APIError, DockerException, OSError) as error:
            # requests' errors (APIError included) are OSErrors too: look at what the daemon said first.
            if NO_SPACE in str(error).lower():
                raise self._disk_full(tag, [*tail, str(error)]) from None
            if isinstance(error, APIError):
                raise BuildError(f"building {tag} failed: {error}", image=tag, log_tail="\n".join(tail)) from None
            raise DaemonUnavailable(f"the Docker daemon went away while building {tag}: {error}",
                                    fix=DAEMON_FIX + "; then rerun, finished layers are cached") from None
        if image_id is None:
            raise BuildError(f"building {tag} produced no image", image=tag, log_tail="\n".join(tail))
        return image_id

    def _disk_full(self, tag: str, tail) -> BuildError:
        space = self.disk_free()
        where = f" ({space.path} has {space.free / 1e9:.1f} GB free now)" if space else ""
        return BuildError(f"building {tag} failed: the Docker host's disk is full{where}", image=tag,
                          log_tail="\n".join(tail),
                          fix="free space, then rerun: 'make prune' removes the kit's superseded images, 'make "
                              "clean' all of them (they are rebuilt from their locks), 'docker system df' shows "
                              "what takes the space")

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

    @_translated("tag image")
    def tag(self, image_id: str, ref: str) -> None:
        repository, tag = _split_tag(ref)
        self.client.api.tag(image_id, repository, tag, force=True)

    def run(self, spec: RunSpec, log: LogSink | None = None) -> RunResult:
        container = None
        watchdog = None
        expired = threading.Event()
        stalled = False
        started = time.perf_counter()
        try:
            container = self.client.containers.create(spec.image, **container_kwargs(spec))
            if spec.timeout_s:
                watchdog = threading.Timer(spec.timeout_s, self._expire, (container, expired))
                watchdog.daemon = True
                watchdog.start()
            container.start()
            follower = self._follow_in_background(container, log) if log is not None else None
            try:
                status = self._wait(container, spec, started)
            except DaemonUnavailable:
                stalled = True
                raise
            if follower is not None:
                follower.join(timeout=GRACE_S)  # the stream ends with the container
            seconds = time.perf_counter() - started
            stdout = container.logs(stdout=True, stderr=False).decode(errors="replace")
            stderr = container.logs(stdout=False, stderr=True).decode(errors="replace")
            container.reload()
            oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
            exit_code = int(status.get("StatusCode", -1))
            # The in-container limit (a host that stopped watching) reads as the host's own.
            timed_out = expired.is_set() or bool(spec.timeout_s and exit_code == TIMEOUT_EXIT and not oom)
            return RunResult(exit_code, stdout, stderr, oom, timed_out=timed_out, seconds=seconds)
        except ImageNotFound:
            raise ContainerError(f"image {spec.image} does not exist", image=spec.image,
                                 command=list(spec.command), container_exit=-1,
                                 fix="build it first ('make images')") from None
        except APIError as error:
            raise EngineError(f"Docker refused to run {' '.join(spec.command[:4])} in {spec.image}: "
                              f"{_explanation(error)}", fix=_fix_for(error)) from None
        except (DockerException, OSError) as error:
            # The connection itself broke (or timed out): the daemon stopped, died or stalled.
            raise DaemonUnavailable(f"the Docker daemon went away while running {' '.join(spec.command[:4])}: {error}",
                                    fix=DAEMON_FIX + "; then rerun: finished steps are kept, this one starts "
                                                     "again (its partial output was never moved into place)") from None
        finally:
            if watchdog is not None:
                watchdog.cancel()
            if container is not None and not stalled:
                _secondary(f"remove container {getattr(container, 'short_id', spec.name or '')}",
                           lambda: container.remove(force=True))
            elif container is not None:
                # Asking a stalled daemon again would only wait again; its own `timeout` ends the command,
                # and the next run's start-up sweep removes the container.
                log_module.warning("left container %s to the next run's sweep: the daemon does not answer",
                                   getattr(container, "short_id", ""))

    def _wait(self, container, spec: RunSpec, started: float) -> dict:
        """The container's end, waited for until its limit plus GRACE_S (a daemon that has not said by
        then has stalled: DaemonUnavailable, exit 12); without a limit, as long as a long call."""
        budget = (spec.timeout_s + GRACE_S - (time.perf_counter() - started)) if spec.timeout_s else LONG_TIMEOUT_S
        try:
            return container.wait(timeout=max(0.1, budget))  # the request's own timeout, not the client's
        except requests.exceptions.Timeout:
            raise self._stalled(spec) from None
        except requests.exceptions.ConnectionError as error:
            if "timed out" not in str(error).lower():
                raise  # the daemon went away: run() says so
            raise self._stalled(spec) from None

    @staticmethod
    def _stalled(spec: RunSpec) -> DaemonUnavailable:
        limit = f"its time limit ({spec.timeout_s:.0f} s) plus {GRACE_S} s" if spec.timeout_s else \
            f"{LONG_TIMEOUT_S} s"
        return DaemonUnavailable(f"the Docker daemon stalled: it did not report the end of {' '.join(spec.command[:4])} "
                                 f"within {limit}", fix=STALLED_FIX + "; the container is removed by the next run")

    def _follow_in_background(self, container, sink: LogSink) -> threading.Thread:
        follower = threading.Thread(target=self._follow, args=(container, sink), daemon=True, name="container-log")
        follower.start()
        return follower

    def _follow(self, container, sink: LogSink) -> None:
        """Stream stderr lines to `log`, on its own thread: the wait, not the stream, decides when the run
        ends. A step silent for longer than a call's timeout ends one stream; the next picks up from
        then. A broken stream costs only the live progress (stderr is read whole after the end)."""
        since = None
        while True:
            pending = b""
            try:
                for chunk in container.logs(stdout=False, stderr=True, stream=True, follow=True,
                                            **({"since": since} if since else {})):
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        sink(line.decode(errors="replace"))
                    since = int(time.time())
                return
            except (DockerException, OSError) as error:
                if "timed out" not in str(error).lower():
                    log_module.debug("log stream of %s ended early (%s)", getattr(container, "short_id", ""), error)
                    return
                since = since or int(time.time())
            finally:
                if pending:
                    sink(pending.decode(errors="replace"))

    @staticmethod
    def _expire(container, expired: threading.Event) -> None:
        expired.set()
        # Bounded: the ordinary client's timeout; a stalled daemon is then _wait's to report.
        _secondary(f"kill container {getattr(container, 'short_id', '')} after its time limit", container.kill)

    @_translated("remove image")
    def remove_image(self, ref: str) -> None:
        try:
            self.client.images.remove(ref, force=True)
        except (ImageNotFound, NotFound):
            pass

    def remove_unused_image(self, image_id: str) -> bool:
        try:
            image = self.client.api.inspect_image(image_id)
            if image.get("RepoTags"):
                return False
            # Without force Docker refuses while any container, stopped ones included, uses it.
            self.client.api.remove_image(image["Id"], force=False, noprune=False)
            return True
        except (APIError, DockerException, OSError) as error:
            log.debug("kept image %s: %s", image_id[:19], error)
            return False

    def disk_free(self) -> DiskSpace | None:
        try:
            root = self.client.info().get("DockerRootDir") or ""
            return DiskSpace(root, shutil.disk_usage(root).free) if root else None
        except (DockerException, OSError):
            return None  # a remote daemon, or a root this user cannot see: nothing to promise

    @_translated("save images")
    def save_images(self, refs: list[str], destination: Path) -> None:
        api = self.long_client.api
        # docker-py's get_image takes one name; the API takes several, so shared layers are stored once.
        response = api._get(api._url("/images/get"), params={"names": list(refs)}, stream=True)
        api._raise_for_status(response)
        with destination.open("wb") as handle:
            for chunk in api._stream_raw_result(response, 1 << 20, False):
                handle.write(chunk)

    @_translated("load images from")
    def load_images(self, source: Path) -> list[str]:
        loaded: list[str] = []
        with source.open("rb") as handle:
            for event in self.long_client.api.load_image(handle):
                if "error" in event:
                    raise EngineError(f"docker load of {source} failed: {event['error'].strip()}",
                                      fix=f"{source} is damaged or not an image archive: make it again with "
                                          "'coldchain images-save'")
                for line in str(event.get("stream", "")).splitlines():
                    for prefix in ("Loaded image: ", "Loaded image ID: "):
                        if line.startswith(prefix):
                            loaded.append(line[len(prefix):].strip())
        return loaded

    @_translated("push")
    def push(self, ref: str) -> str:
        repository, tag = _split_tag(ref)
        digest = None
        for event in self.long_client.api.push(repository, tag=tag, stream=True, decode=True):
            if "error" in event:
                raise EngineError(f"pushing {ref} failed: {event['error'].strip()}",
                                  fix="check that the registry answers and accepts pushes (docker push works "
                                      "for it); a plain-HTTP registry other than localhost must be among the "
                                      "daemon's insecure-registries")
            digest = (event.get("aux") or {}).get("Digest") or digest
        if not digest:
            raise EngineError(f"pushing {ref} reported no digest", fix="check the registry's log")
        return digest

    @_translated("pull")
    def pull_digest(self, ref: str) -> ImageInfo:
        repository, _, digest = ref.partition("@")
        if not digest.startswith("sha256:"):
            raise EngineError(f"{ref} does not name a digest (name@sha256:...)",
                              fix="pull by the digests 'coldchain images-push' wrote")
        try:
            self.long_client.api.pull(repository, tag=digest)
        except (ImageNotFound, NotFound):
            raise EngineError(f"the registry has no {ref}",
                              fix="push it first ('coldchain images-push REGISTRY'), or check the registry") from None
        return _info(self.client.images.get(ref))

    @_translated("list images labelled")
    def list_images(self, label: str) -> list[ImageInfo]:
        return [_info(image) for image in self.client.images.list(filters={"label": label})]

    @_translated("list containers labelled")
    def remove_containers(self, label: str) -> int:
        removed = 0
        for container in self._containers(label):
            try:
                container.remove(force=True)
                removed += 1
            except NotFound:
                pass  # it went away on its own meanwhile
            except APIError as error:
                # 409: already being removed (a run's own cleanup got there first).
                log.warning("could not remove container %s: %s", container.short_id, _explanation(error))
        return removed

    @_translated("list containers labelled")
    def list_containers(self, label: str) -> list[ContainerInfo]:
        return [ContainerInfo(container.id, dict(container.labels or {})) for container in self._containers(label)]

    def _containers(self, label: str) -> list:
        # docker-py inspects each listed container in turn: one that another run's auto-remove takes away in
        # between would otherwise fail the whole listing with a 404.
        return self.client.containers.list(all=True, filters={"label": label}, ignore_removed=True)

    @_translated("remove container")
    def remove_container(self, container_id: str) -> None:
        try:
            self.client.api.remove_container(container_id, force=True)
        except (ImageNotFound, NotFound):
            pass  # it went away on its own meanwhile

    def gpu_runtime(self) -> bool:
        try:
            runtimes = self.client.info().get("Runtimes", {})
        except (DockerException, OSError):
            return False
        return "nvidia" in runtimes
