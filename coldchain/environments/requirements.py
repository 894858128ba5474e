"""A user's own environment (a `pip freeze` or a requirements.txt) as a hashed lock for a base's
Python and platform, so it becomes an image built exactly like the kit's own.

pip's resolver does the work in a dry run (`pip install --dry-run --report`) for the image's Python
and manylinux platform, wheels only; the report carries each chosen file's sha256 as the index
publishes it, so nothing but metadata is downloaded. Pins that cannot be installed from wheels for
that Python are named with the nearest versions that can, on this and on the other bases' Pythons.
The file is read by pip's rules (reqfile.py); when it has hashes (pip-compile --generate-hashes),
every wheel the lock pins must be one of the files they allow.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..config import BASES, BaseSpec, LockSpec, Project
from ..errors import LockError, UsageError
from ..fsutil import atomic_write_text
from .locks import INPUT_HASH_MARK, host_python, input_sha256, nearest_version_hint, normalize, parse_lock
from .reqfile import RequirementsFile, read_requirements
from .wheelhouse import platform_args

log = logging.getLogger(__name__)
LOCK_NAME = "requirements.lock"
SOURCE_NAME = "requirements.in"
CONSTRAINTS_NAME = "constraints.in"  # the file's -c constraints, beside the source that names it
KIT_NEEDS = ("pillow",)  # what the container side imports besides TensorFlow (and numpy, which TF brings)


@dataclass(frozen=True)
class UserEnvironment:
    """A user's requirements, resolved: the lock (and a copy of its source) under `directory`."""

    name: str
    directory: Path
    python: str
    base: str

    def lock_spec(self) -> LockSpec:
        return LockSpec(name=f"user-{self.name}", source=str(self.directory / SOURCE_NAME),
                        lock=str(self.directory / LOCK_NAME), python=self.python, base=self.base)


def base_for_python(python: str) -> BaseSpec:
    for spec in BASES.values():
        if spec.python == python and spec.packages == ("python3", "python3-venv"):
            return spec
    pythons = ", ".join(f"{spec.python} ({spec.name})" for spec in BASES.values() if spec.packages == ("python3", "python3-venv"))
    raise UsageError(f"no coldchain base has Python {python}", fix=f"choose one of: {pythons}")


def _render(parsed: RequirementsFile, directory: Path) -> str:
    """The source pip resolves (and that travels with the lock): the requirements as `packaging` reads
    them, one per line with extras and markers, `--pre` if the file asks for it, constraints in a file
    beside it. Hashes are not repeated: they are checked against the resolver's choice instead
    (pip's hash-checking mode would refuse the unpinned additions below)."""
    # A line that two included files both hold is said once (dict: ordered, no duplicates).
    requirements = list(dict.fromkeys(str(entry.requirement) for entry in parsed.entries if not entry.constraint))
    if not requirements:
        raise UsageError(f"{parsed.path}: no requirements in it",
                         fix="pass a pip freeze or a requirements.txt with pins")
    names = parsed.names()
    for needed in KIT_NEEDS:
        if needed not in names:
            log.info("%s has no %s, which coldchain's own code needs in the image: adding it (unpinned)", parsed.path,
                     needed)
            requirements.append(needed)
    options = ["--pre"] if parsed.pre else []
    constraints = list(dict.fromkeys(str(entry.requirement) for entry in parsed.entries if entry.constraint))
    (directory / CONSTRAINTS_NAME).unlink(missing_ok=True)
    if constraints:
        atomic_write_text(directory / CONSTRAINTS_NAME, "\n".join(constraints) + "\n")
        options.append(f"-c {CONSTRAINTS_NAME}")
    return "\n".join([f"# {parsed.path.name}, as coldchain read it", *options, *requirements]) + "\n"


def _check_hashes(parsed: RequirementsFile, report: dict, base: BaseSpec) -> None:
    """A hashed file (pip-compile --generate-hashes) holds pip to the files it names; the lock is held
    to them too: each wheel the resolver chose must be one the file allows, and, as in pip's
    hash-checking mode, every package needs hashes (except what coldchain itself adds)."""
    if not parsed.hashed:
        return
    missing = []
    for item in report.get("install", []):
        name, version = normalize(item["metadata"]["name"]), item["metadata"]["version"]
        allowed, where = parsed.hashes(name)
        info = item.get("download_info") or {}
        chosen = {f"{algorithm}:{digest}".lower() for algorithm, digest in
                  ((info.get("archive_info") or {}).get("hashes") or {}).items()}
        if not allowed:
            if name not in KIT_NEEDS or name in parsed.names():
                missing.append(f"{name}=={version}")
        elif not chosen & allowed:
            wheel = info.get("url", "?").rsplit("/", 1)[-1]
            raise LockError(f"{where}: {name}=={version}: the wheel pip chose for Python {base.python} on Linux "
                            f"x86_64 ({wheel}) is none of the {len(allowed)} files the line's hashes allow",
                            fix=f"if the file was compiled for another Python or platform, compile it again for "
                                f"Python {base.python} on Linux (pip-compile --generate-hashes); if not, the index "
                                "serves a file you did not lock: find out why before adopting it")
    if missing:
        raise LockError(f"{parsed.path} has hashes, so pip checks every package by hash, but it has none for "
                        f"{', '.join(missing)}, which Python {base.python} on Linux x86_64 needs (pip would refuse "
                        "to install it too)", fix=f"compile the file again for Python {base.python} on Linux "
                        "(pip-compile --generate-hashes), or add those pins with their hashes")


def _dry_run(requirements: Path, base: BaseSpec, report: Path, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="coldchain-resolve-") as target:
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                   "--disable-pip-version-check", "--no-cache-dir", "--report", str(report), "--target", target,
                   *platform_args(base.python, base.glibc), *extra, "-r", str(requirements)]
        # The kit's index only: no local find-links or constraints of this machine's pip configuration.
        environment = dict(os.environ, PIP_FIND_LINKS="", PIP_CONSTRAINT="", PIP_EXTRA_INDEX_URL="")
        return subprocess.run(command, capture_output=True, text=True, check=False, shell=False, env=environment)


def _explain(output: str, source: Path, base: BaseSpec) -> UsageError:
    """Why pip found nothing to install, in the user's words: the package, the nearest installable
    versions for this Python, and whether another base's Python has the version asked for."""
    tail = "\n".join(output.strip().splitlines()[-12:])
    hint = nearest_version_hint(output, str(source))
    match = re.search(r"satisfies the requirement ([A-Za-z0-9._-]+)\s*==\s*([^\s)]+)", output.replace("\n", " "))
    if match is None:
        return UsageError(f"{source}: pip cannot resolve these requirements for Python {base.python} ({base.name})",
                          log_tail=tail, fix=hint or "the log names the conflicting requirements; fix them and rerun")
    name, version = match.group(1), match.group(2)
    elsewhere = []
    with tempfile.TemporaryDirectory(prefix="coldchain-probe-") as tmp:
        single = Path(tmp) / "one.txt"
        single.write_text(f"{name}=={version}\n")
        for other in BASES.values():
            if other.python == base.python or other.packages != ("python3", "python3-venv"):
                continue
            if _dry_run(single, other, Path(tmp) / "report.json", ("--no-deps",)).returncode == 0:
                elsewhere.append(f"Python {other.python} ({other.name}: --python {other.python})")
    where = (f"; {name}=={version} has wheels for {', '.join(elsewhere)}" if elsewhere else
             f"; no coldchain base's Python ({', '.join(sorted({b.python for b in BASES.values()}))}) has a wheel of "
             f"{name}=={version} (an sdist-only release, or one for another Python)")
    message = (f"{source}: {name}=={version} cannot be installed from wheels on Python {base.python} ({base.name})"
               + where)
    return UsageError(message, log_tail=tail, fix=(hint or f"pin a {name} release that ships wheels") +
                      " (coldchain installs only hash-checked wheels)")


def resolve(project: Project, source: Path, directory: Path, name: str, python: str | None = None) -> UserEnvironment:
    """Resolve `source` into directory/requirements.lock (and a copy of the source beside it)."""
    python = python or host_python()
    base = base_for_python(python)
    if python != host_python():
        raise UsageError(f"resolving a user environment for Python {python} needs that Python on the host (this one "
                         f"runs {host_python()})", fix=f"run coldchain with Python {python}, or use --python "
                                                   f"{host_python()}")
    parsed = read_requirements(source)
    directory.mkdir(parents=True, exist_ok=True)
    environment = UserEnvironment(name=name, directory=directory, python=python, base=base.name)
    atomic_write_text(directory / SOURCE_NAME, _render(parsed, directory))
    with tempfile.TemporaryDirectory(prefix="coldchain-report-") as tmp:
        report_path = Path(tmp) / "report.json"
        log.info("resolving %s for Python %s (%s) with pip's resolver", source, python, base.name)
        result = _dry_run(directory / SOURCE_NAME, base, report_path)
        if result.returncode != 0:
            raise _explain(result.stdout + result.stderr, source, base)
        report = json.loads(report_path.read_text())
    _check_hashes(parsed, report, base)
    lines = []
    for item in sorted(report.get("install", []), key=lambda item: item["metadata"]["name"].lower()):
        metadata, info = item["metadata"], item.get("download_info") or {}
        hashes = (info.get("archive_info") or {}).get("hashes") or {}
        if "sha256" not in hashes or not info.get("url", "").endswith(".whl"):
            raise LockError(f"{source}: {metadata['name']}=={metadata['version']} came without a wheel sha256 from "
                            "the index", fix="pin a version that ships wheels")
        lines.append(f"{metadata['name'].lower()}=={metadata['version']} \\\n    --hash=sha256:{hashes['sha256']}")
    spec = environment.lock_spec()
    header = (f"#\n# Resolved by coldchain for Python {python} on {base.name} (manylinux_{base.glibc}, x86_64), wheels "
              f"only, from {source.name}{' (each wheel one its hashes allow)' if parsed.hashed else ''}.\n"
              f"#    coldchain adopt --requirements {source.name}\n"
              f"{INPUT_HASH_MARK}{input_sha256(project, spec)}\n#\n")
    atomic_write_text(directory / LOCK_NAME, header + "\n".join(lines) + "\n")
    parse_lock(directory / LOCK_NAME)  # the lock reads back as every lock must
    log.info("locked %d packages into %s", len(lines), directory / LOCK_NAME)
    return environment

