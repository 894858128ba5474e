"""A user's own environment (a `pip freeze` or a requirements.txt) as a hashed lock for a base's
Python and platform, so it becomes an image built exactly like the kit's own.

pip's resolver does the work in a dry run (`pip install --dry-run --report`) for the image's Python
and manylinux platform, wheels only; the report carries each chosen file's sha256 as the index
publishes it, so nothing but metadata is downloaded. Pins that cannot be installed from wheels for
that Python are named with the nearest versions that can, on this and on the other bases' Pythons.
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
from .wheelhouse import platform_args

log = logging.getLogger(__name__)
LOCK_NAME = "requirements.lock"
SOURCE_NAME = "requirements.in"
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
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


def _clean_requirements(source: Path) -> str:
    """The requirements as pip reads them, checked line by line: editable, local and URL requirements
    cannot come from the index, so they cannot be locked by hash."""
    try:
        text = source.read_text()
    except FileNotFoundError:
        raise UsageError(f"{source}: requirements file not found", fix="pass a pip freeze or requirements.txt") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{source}: cannot read it ({error})", fix="pass a UTF-8 text requirements file") from None
    kept = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-e", "--editable")) or " @ " in line or line.startswith(("file:", "http:", "https:", "git+",
                                                                                     ".", "/")):
            raise UsageError(f"{source}:{number}: {line!r} is not a requirement from the package index",
                             fix="replace it with name==version (pip freeze writes those), or leave it out")
        if line.startswith("-"):
            if line.split()[0] in ("-r", "-c", "--requirement", "--constraint"):
                raise UsageError(f"{source}:{number}: includes another file ({line})",
                                 fix="pass one requirements file with every pin in it (pip freeze > requirements.txt)")
            continue  # index options: the kit uses its own index settings
        if not _REQUIREMENT.match(line):
            raise UsageError(f"{source}:{number}: {line!r} is not a requirement", fix="write name==version per line")
        kept.append(line)
    if not kept:
        raise UsageError(f"{source}: no requirements in it", fix="pass a pip freeze or a requirements.txt with pins")
    names = {normalize(_REQUIREMENT.match(line).group(1)) for line in kept}
    for needed in KIT_NEEDS:
        if needed not in names:
            log.info("%s has no %s, which coldchain's own code needs in the image: adding it (unpinned)", source, needed)
            kept.append(needed)
    return "\n".join(kept) + "\n"


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
    directory.mkdir(parents=True, exist_ok=True)
    environment = UserEnvironment(name=name, directory=directory, python=python, base=base.name)
    atomic_write_text(directory / SOURCE_NAME, _clean_requirements(source))
    with tempfile.TemporaryDirectory(prefix="coldchain-report-") as tmp:
        report_path = Path(tmp) / "report.json"
        log.info("resolving %s for Python %s (%s) with pip's resolver", source, python, base.name)
        result = _dry_run(directory / SOURCE_NAME, base, report_path)
        if result.returncode != 0:
            raise _explain(result.stdout + result.stderr, source, base)
        report = json.loads(report_path.read_text())
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
              f"only, from {source.name}.\n#    coldchain adopt --requirements {source.name}\n"
              f"{INPUT_HASH_MARK}{input_sha256(project, spec)}\n#\n")
    atomic_write_text(directory / LOCK_NAME, header + "\n".join(lines) + "\n")
    parse_lock(directory / LOCK_NAME)  # the lock reads back as every lock must
    log.info("locked %d packages into %s", len(lines), directory / LOCK_NAME)
    return environment

