"""Resolving a lock for a Python this host does not run (bullseye's 3.9, trixie's 3.13).

pip-compile evaluates markers and Requires-Python against the interpreter it runs under, so a
3.9 lock resolved by a 3.11 pip-compile would be wrong in ways nobody sees until install time.
Instead pip-compile runs inside the lock's own base image, under that base's python3, with the
project mounted read-only; only the resolved file comes back, stamped here like any other lock.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from .bases import resolve_base
from .emulation import emulated
from .foreign_lock import hash_for_machine
from ..config import BASES, KIT_LABEL, LOCKS, LockSpec, Project
from ..contract import MOUNT_OUT
from ..engine import Engine, Mount, RunSpec
from ..errors import LockError
from ..fsutil import atomic_write_text
from .locks import REGENERATE_COMMAND, stamp_lock, host_python, input_sha256, parse_lock

log = logging.getLogger(__name__)

# Arguments arrive as positional parameters, never spliced into the script text.
_RESOLVE_SCRIPT = r"""
python3 -m venv /tmp/resolver
/tmp/resolver/bin/python -m pip install --quiet --disable-pip-version-check "pip>=23" "pip-tools==$1"
cd /project
exec /tmp/resolver/bin/pip-compile --quiet ${5:+"$5"} --allow-unsafe --strip-extras \
    --no-emit-index-url --no-emit-find-links --no-emit-trusted-host --cache-dir /tmp/cache \
    --output-file "$4/$3" "$2"
"""
CA_BUNDLE_CANDIDATES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")


def pip_tools_version(project: Project) -> str:
    version = parse_lock(project.path(LOCKS["host"].lock)).version("pip-tools")
    if not version:
        raise LockError(f"{LOCKS['host'].lock} pins no pip-tools", fix="add pip-tools to requirements-host.in")
    return version


def _ca_bundle() -> Path | None:
    for candidate in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"), *CA_BUNDLE_CANDIDATES):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def resolved_in_base(spec: LockSpec) -> bool:
    """A lock for another Python or another machine: pip-compile judges markers (python_version,
    platform_machine: aarch64's tensorflow needs tensorflow-cpu-aws) by the interpreter it runs under,
    so it runs under the base's own python3, emulated where the base is another machine's."""
    return spec.python != host_python() or emulated(BASES[spec.base])


def compile_lock_in_base(engine: Engine, project: Project, spec: LockSpec, *, upgrade: bool = False) -> Path:
    """pip-compile `spec` inside its base image (which needs the network while resolving)."""
    if not resolved_in_base(spec):
        raise LockError(f"{spec.lock} targets this host's Python {spec.python}; resolve it on the host")
    base = resolve_base(engine, project, BASES[spec.base])
    target = project.path(spec.lock)
    with tempfile.TemporaryDirectory(dir=project.root, prefix=".lock-") as tmp:
        staging = Path(tmp)
        staging.chmod(0o777)  # the container's pip runs as an unprivileged user
        if target.exists() and not upgrade:
            shutil.copyfile(target, staging / target.name)
            (staging / target.name).chmod(0o666)
        mounts = [Mount(project.root.resolve(), "/project", read_only=True), Mount(staging.resolve(), MOUNT_OUT, read_only=False)]
        environment = {"CUSTOM_COMPILE_COMMAND": REGENERATE_COMMAND, "HOME": "/tmp"}
        # Where HTTPS goes through an inspecting proxy, the container must trust what the host trusts.
        ca = _ca_bundle()
        if ca is not None:
            mounts.append(Mount(ca.resolve(), "/etc/coldchain-ca.pem", read_only=True))
            environment["PIP_CERT"] = "/etc/coldchain-ca.pem"
        for name in ("PIP_INDEX_URL", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY"):
            if os.environ.get(name):
                environment[name] = os.environ[name]
        # Another machine's lock is hashed on the host (foreign_lock.py): under qemu, pip-tools' hashing
        # of every file of every pinned version would take hours.
        foreign = emulated(BASES[spec.base])
        run = RunSpec(image=base.image_id, command=("sh", "-ec", _RESOLVE_SCRIPT, "resolve", pip_tools_version(project),
                                                    spec.source, target.name, MOUNT_OUT,
                                                    "" if foreign else "--generate-hashes"),
                      mounts=tuple(mounts), environment=environment, network="bridge", user="65534:65534",
                      tmpfs={"/tmp": "rw,exec,size=4g"}, labels={KIT_LABEL: "coldchain"},
                      platform=BASES[spec.base].platform)
        log.info("resolving %s with Python %s inside %s", spec.source, base.python_version, base.ref)
        result = engine.run(run, log=lambda line: log.debug("resolver | %s", line))
        if result.exit_code != 0:
            tail = "\n".join(result.stderr.strip().splitlines()[-15:])
            raise LockError(f"pip-compile (Python {spec.python}, in {base.ref}) could not resolve {spec.source}",
                            log_tail=tail,
                            fix=f"fix the requirement in {spec.source} the log names; if the index is unreachable "
                                "from containers, check PIP_CERT / proxy settings and rerun 'make lock'")
        text = (staging / target.name).read_text()
        if foreign:
            text = hash_for_machine(project, spec, BASES[spec.base], text)
        atomic_write_text(target, stamp_lock(text, input_sha256(project, spec)))
    return target
