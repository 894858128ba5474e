"""Lock files: parsing, freshness, agreement between locks, and regeneration with pip-tools."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..config import LOCKS, LockSpec, Project
from ..errors import LockError
from ..fsutil import atomic_write_text

REGENERATE_COMMAND = "make lock"
INPUT_HASH_MARK = "#    coldchain-input-sha256: "
_NAME_RE = re.compile(r"[-_.]+")
_PIN_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")
_INCLUDE_RE = re.compile(r"^\s*(-r|-c|--requirement|--constraint)\s*=?\s*(\S+)")


def normalize(name: str) -> str:
    return _NAME_RE.sub("-", name).lower()


@dataclass(frozen=True)
class Pin:
    name: str  # normalized
    version: str
    hashes: frozenset[str]  # "sha256:<hex>"
    line: int


@dataclass(frozen=True)
class Lock:
    path: Path
    pins: dict[str, Pin]
    input_sha256: str | None
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def version(self, name: str) -> str | None:
        pin = self.pins.get(normalize(name))
        return pin.version if pin else None


def parse_lock(path: Path) -> Lock:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise LockError(f"{path}: lock file not found", fix=f"run '{REGENERATE_COMMAND}'") from None
    pins: dict[str, Pin] = {}
    input_sha = None
    logical: list[tuple[int, str]] = []
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        if raw.startswith(INPUT_HASH_MARK):
            input_sha = raw[len(INPUT_HASH_MARK):].strip()
        stripped = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not stripped and not buffer:
            continue
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        buffer += stripped
        logical.append((start, buffer.strip()))
        buffer = ""
    if buffer:
        logical.append((start, buffer.strip()))
    for number, entry in logical:
        if entry.startswith("-"):
            continue
        match = _PIN_RE.match(entry)
        if not match:
            raise LockError(f"{path}:{number}: '{entry.split()[0]}' is not pinned with '=='",
                            fix=f"regenerate the lock with '{REGENERATE_COMMAND}'")
        name = normalize(match.group(1))
        hashes = frozenset(h.split("=", 1)[1] for h in entry.split() if h.startswith("--hash="))
        if not hashes:
            raise LockError(f"{path}:{number}: {name}=={match.group(3)} has no --hash",
                            fix=f"every pin needs a hash; regenerate the lock with '{REGENERATE_COMMAND}'")
        pins[name] = Pin(name, match.group(3), hashes, number)
    return Lock(path, pins, input_sha, text)


def input_files(project: Project, source: Path, seen: set[Path] | None = None) -> list[Path]:
    """The .in file and everything it pulls in with -r/-c, in a stable order."""
    seen = set() if seen is None else seen
    source = source.resolve()
    if source in seen:
        return []
    seen.add(source)
    if not source.is_file():
        raise LockError(f"{source}: file not found", fix="create it, or fix the -r/-c line that names it")
    files = [source]
    for raw in source.read_text().splitlines():
        match = _INCLUDE_RE.match(raw)
        if match:
            files += input_files(project, source.parent / match.group(2), seen)
    return files


def input_sha256(project: Project, spec: LockSpec) -> str:
    """What the lock was resolved from: its .in, the files those include, and the target Python."""
    digest = hashlib.sha256(f"python {spec.python}\n".encode())
    for path in input_files(project, project.path(spec.source)):
        # A lock that travels with a model (adopt: an absolute source) is stamped by file name, not by where it lies.
        name = path.name if Path(spec.source).is_absolute() else path.relative_to(project.root).as_posix()
        digest.update(name.encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def check_fresh(project: Project, spec: LockSpec) -> Lock:
    lock_path = project.path(spec.lock)
    if not lock_path.exists():
        raise LockError(f"{spec.source} has no lock ({spec.lock} is missing)",
                        fix=f"run '{REGENERATE_COMMAND}' and commit {spec.lock}")
    lock = parse_lock(lock_path)
    expected = input_sha256(project, spec)
    if lock.input_sha256 != expected:
        raise LockError(f"{spec.lock} is out of date: {spec.source} (or a file it includes) changed "
                        "since the lock was generated",
                        fix=f"run '{REGENERATE_COMMAND}' and commit {spec.lock}")
    return lock


def disagreements(first: Lock, second: Lock) -> list[str]:
    """Packages both locks pin, at different versions."""
    shared = sorted(set(first.pins) & set(second.pins))
    return [f"{name}: {first.path.name} has {first.pins[name].version}, "
            f"{second.path.name} has {second.pins[name].version}"
            for name in shared if first.pins[name].version != second.pins[name].version]


def check_all(project: Project, names: list[str] | None = None) -> dict[str, Lock]:
    """Every lock fresh, fully hashed, and agreeing with the locks it must agree with."""
    chosen = names or list(LOCKS)
    locks = {name: check_fresh(project, LOCKS[name]) for name in chosen}
    for name in chosen:
        for other in LOCKS[name].agrees_with:
            other_lock = locks.get(other) or check_fresh(project, LOCKS[other])
            problems = disagreements(other_lock, locks[name])
            if problems:
                raise LockError(f"{LOCKS[name].lock} disagrees with {LOCKS[other].lock} on shared pins:\n  "
                                + "\n  ".join(problems),
                                fix=f"constrain {LOCKS[name].source} with '-c {LOCKS[other].lock}' "
                                    f"and run '{REGENERATE_COMMAND}'")
    return locks


def host_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def compile_lock(project: Project, spec: LockSpec, *, upgrade: bool = False) -> Path:
    """Resolve `spec` with pip-compile into a temp file, stamp its input hash, then rename.
    Starts from the existing lock so unchanged pins stay put unless `upgrade`."""
    if spec.python != host_python():
        raise LockError(f"{spec.lock} targets Python {spec.python} but this host runs Python {host_python()}",
                        fix=f"run '{REGENERATE_COMMAND}' with a Python {spec.python} interpreter "
                            f"(PYTHON=python{spec.python} make lock)")
    target = project.path(spec.lock)
    with tempfile.TemporaryDirectory(dir=project.root, prefix=".lock-") as tmp:
        staging = Path(tmp) / target.name
        if target.exists() and not upgrade:
            shutil.copyfile(target, staging)
        command = [sys.executable, "-m", "piptools", "compile", "--quiet", "--generate-hashes",
                   "--allow-unsafe", "--strip-extras", "--no-emit-index-url", "--no-emit-find-links",
                   "--no-emit-trusted-host", "--output-file", str(staging), spec.source]
        if upgrade:
            command.append("--upgrade")
        env = dict(os.environ, CUSTOM_COMPILE_COMMAND=REGENERATE_COMMAND)
        result = subprocess.run(command, cwd=project.root, env=env, capture_output=True, text=True,
                                check=False, shell=False)
        if result.returncode != 0:
            tail = "\n".join(result.stderr.strip().splitlines()[-15:])
            raise LockError(f"pip-compile could not resolve {spec.source}", log_tail=tail,
                            fix=nearest_version_hint(result.stderr, spec.source)
                            or f"fix the requirement in {spec.source} that the log names, then rerun "
                               f"'{REGENERATE_COMMAND}'")
        text = staging.read_text()
        stamped = stamp_lock(text, input_sha256(project, spec))
        atomic_write_text(target, stamped)
    return target


_NO_VERSION_RE = re.compile(r"satisfies the requirement ([A-Za-z0-9._-]+)\s*==\s*([^\s)]+).*?\(from versions: ([^)]*)\)")


def nearest_version_hint(stderr: str, source: str) -> str | None:
    """For 'tensorflow==2.99' pip lists the versions it has; name the closest ones."""
    match = _NO_VERSION_RE.search(stderr.replace("\n", " "))
    if not match:
        return None
    name, wanted, available = match.group(1), match.group(2), [v.strip() for v in match.group(3).split(",") if v.strip()]
    if not available:
        return f"{name} has no release installable here; check the name in {source}"
    release = [v for v in available if re.fullmatch(r"[0-9.]+", v)] or available

    def key(version: str) -> tuple:
        return tuple(int(part) if part.isdigit() else 0 for part in version.split("."))

    target = key(wanted)
    closest = sorted(release, key=lambda v: (sum((a - b) ** 2 * 100 ** -i for i, (a, b) in
                                                 enumerate(zip(key(v) + (0,) * 4, target + (0,) * 4))), v))[:3]
    return (f"{name}=={wanted} does not exist on the index; nearest: {', '.join(closest)} (newest {release[-1]}); "
            f"edit {source} and rerun '{REGENERATE_COMMAND}'")


def stamp_lock(text: str, digest: str) -> str:
    lines = [line for line in text.splitlines() if not line.startswith(INPUT_HASH_MARK)]
    # Right after pip-compile's "by the following command" block, so the header stays one block.
    insert_at = next((i + 1 for i, line in enumerate(lines) if line.strip() == f"#    {REGENERATE_COMMAND}"), 0)
    lines.insert(insert_at, INPUT_HASH_MARK + digest)
    return "\n".join(lines) + "\n"
