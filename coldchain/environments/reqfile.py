"""A user's requirements file read by pip's own rules (backslash continuations, comments, option lines,
-r/-c includes relative to the file, per-requirement --hash), each requirement parsed with its extras
and markers by `packaging`. What an image built only from hash-locked wheels of the kit's index cannot
honour (another index, URLs, VCS checkouts, editables, local paths, source builds) is refused with its
file, line and fix, never dropped."""

from __future__ import annotations

import logging
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from ..errors import UsageError
from .locks import normalize

log = logging.getLogger(__name__)
_COMMENT = re.compile(r"(^|\s+)#.*$")  # pip's: '#' at the start of a line or after whitespace
_ENV_VAR = re.compile(r"\$\{[A-Z0-9_]+\}")  # pip expands these; a lock must not depend on this shell
_HASH = re.compile(r"^(sha256|sha384|sha512):[0-9a-fA-F]+$")
_VCS = re.compile(r"(^|@\s*)(git|hg|svn|bzr)\+", re.IGNORECASE)
_ARCHIVES = (".whl", ".zip", ".tar.gz", ".tgz", ".tar.bz2", ".tar")
# pip's requirement-file options, every spelling -> (long name, takes a value).
_OPTIONS = {spelling: (names[-1], takes) for *names, takes in (
    ("-r", "--requirement", True), ("-c", "--constraint", True), ("-e", "--editable", True),
    ("-i", "--index-url", True), ("--extra-index-url", True), ("--no-index", False), ("-f", "--find-links", True),
    ("--trusted-host", True), ("--pre", False), ("--require-hashes", False), ("--prefer-binary", False),
    ("--only-binary", True), ("--no-binary", True), ("--use-feature", True), ("--hash", True),
    ("--config-settings", True), ("--global-option", True)) for spelling in names}
INDEX_OPTIONS = ("--index-url", "--extra-index-url", "--no-index", "--find-links", "--trusted-host")
_SOURCE_BUILDS = ("--no-binary", "--config-settings", "--global-option")
_CREDENTIALS = re.compile(r"(://)[^/@\s]+@")  # user:token@ in a URL, never repeated in a message
_NOTED = {"--prefer-binary": "coldchain installs wheels only", "--only-binary": "coldchain installs wheels only",
          "--use-feature": "coldchain runs pip with its own settings"}
_PIN_FIX = ("pin the released version instead (name==version: `pip list --format=freeze` writes that even for "
            "packages `pip freeze` lists by URL or path), or leave the line out; coldchain builds images only from "
            "index wheels it locks by hash")


@dataclass(frozen=True)
class Entry:
    """One requirement (or constraint) line: the requirement, the hashes it allows, where it was written."""

    requirement: Requirement
    hashes: frozenset[str]  # "sha256:<hex>", lower case
    where: str  # "file:line"
    constraint: bool


@dataclass
class RequirementsFile:
    path: Path
    entries: list[Entry] = field(default_factory=list)
    pre: bool = False
    require_hashes: bool = False

    @property
    def hashed(self) -> bool:
        """pip's hash-checking mode: any --hash, or --require-hashes, turns it on for every package."""
        return self.require_hashes or any(entry.hashes for entry in self.entries)

    def names(self, constraint: bool = False) -> set[str]:
        return {normalize(entry.requirement.name) for entry in self.entries if entry.constraint == constraint}

    def hashes(self, name: str) -> tuple[frozenset[str], str | None]:
        """Every hash the files allow for `name` (a hash names one file, so lines for other versions or
        markers cannot widen what is allowed), and the first line giving one."""
        found = [entry for entry in self.entries if normalize(entry.requirement.name) == name and entry.hashes]
        return frozenset().union(*(entry.hashes for entry in found)), (found[0].where if found else None)


def logical_lines(text: str):
    """(first line number, line) as pip joins and strips them: a trailing backslash continues a line
    unless the line is a comment, and a comment runs from '#' at the start or after whitespace."""
    start, pending = 0, []
    for number, line in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        comment = bool(_COMMENT.match(line))
        if line.endswith("\\") and not comment:
            pending.append(line[:-1])
            continue
        pending.append(" " + line if comment else line)  # a comment ends a continued line, as in pip
        yield from _stripped(start, pending)
        pending = []
    yield from _stripped(start, pending)  # the file's last line ended with a backslash


def _stripped(number: int, parts: list[str]):
    line = _COMMENT.sub("", "".join(parts)).strip()
    if line:
        yield number, line


def read_requirements(path: Path) -> RequirementsFile:
    result = RequirementsFile(path)
    _read(path, result, (), constraint=False, named_by=None)
    return result


def _read(path: Path, result: RequirementsFile, stack: tuple[Path, ...], constraint: bool, named_by: str | None):
    what = f"{named_by}: {path}" if named_by else str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (FileNotFoundError, IsADirectoryError):
        raise UsageError(f"{what}: requirements file not found", fix="pass a pip freeze or requirements.txt" if
                         not named_by else "fix the path: pip reads it relative to the file that names it") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{what}: cannot read it ({error})", fix="pass a UTF-8 text requirements file") from None
    stack = (*stack, path.resolve())
    for number, line in logical_lines(text):
        where = f"{path}:{number}"
        if line.startswith("-"):
            _option_line(line, where, path, result, stack, constraint)
        else:
            result.entries.append(_requirement(line, where, constraint))


def _no_variable(text: str, where: str) -> None:
    variable = _ENV_VAR.search(text)
    if variable:
        raise UsageError(f"{where}: {variable.group(0)} is an environment variable, which pip would expand from the "
                         "shell it runs in", fix="write its value in the file, so the lock depends on the file alone")


def _options(text: str, where: str) -> list[tuple[str, str | None]]:
    """The options of a line as (long name, value), in the spellings pip takes: -rFILE, -r FILE,
    --requirement FILE, --requirement=FILE."""
    try:
        tokens = shlex.split(text)
    except ValueError as error:
        raise UsageError(f"{where}: cannot split {text!r} ({error})", fix="close the quote") from None
    found, index = [], 0
    while index < len(tokens):
        token, value = tokens[index], None
        index += 1
        spelling = token.split("=", 1)[0] if token.startswith("--") else token[:2]
        if token.startswith("--") and "=" in token:
            value = token.split("=", 1)[1]
        elif not token.startswith("--") and len(token) > 2:
            value = token[2:]
        if spelling not in _OPTIONS:
            raise UsageError(f"{where}: {token!r} is not an option coldchain knows in a requirements file",
                             fix="remove it, or write name==version for a requirement")
        name, takes = _OPTIONS[spelling]
        if takes and value is None:
            if index == len(tokens):
                raise UsageError(f"{where}: {spelling} needs a value", fix=f"write {spelling} VALUE, or remove it")
            value, index = tokens[index], index + 1
        elif not takes and value is not None:
            raise UsageError(f"{where}: {spelling} takes no value", fix=f"write {spelling} alone")
        found.append((name, value))
    return found


def _option_line(line: str, where: str, path: Path, result: RequirementsFile, stack: tuple[Path, ...],
                 constraint: bool) -> None:
    for name, value in _options(line, where):
        if name in ("--requirement", "--constraint"):
            _include(name, value, where, path, result, stack, constraint)
        elif name == "--editable":
            raise UsageError(f"{where}: -e {_redacted(value)} installs an editable checkout, not from the index",
                             fix=_PIN_FIX)
        elif name in INDEX_OPTIONS:
            # The value is not repeated: index URLs often carry credentials.
            raise UsageError(
                f"{where}: {name} sets where pip finds packages; coldchain takes no index settings from a "
                "requirements file: it resolves every name on the one index pip is configured with here and builds "
                "images only from the hash-checked lock it writes from there, so a private package's name cannot "
                "quietly resolve to another project's package on a public index",
                fix="delete the line; if your packages come from a private index, make it the only index coldchain's "
                    "pip uses (PIP_INDEX_URL=... coldchain adopt ...), not an extra one")
        elif name in _SOURCE_BUILDS:
            raise UsageError(f"{where}: {name} {value} is for building from source; coldchain installs only "
                             "hash-checked wheels", fix="delete it (every package needs a wheel for the image's "
                                                        "Python)")
        elif name == "--hash":
            raise UsageError(f"{where}: --hash belongs on a requirement's line", fix="write name==version --hash=...")
        elif name == "--pre":
            result.pre = True  # carried into the resolved source: it changes what the resolver may choose
        elif name == "--require-hashes":
            result.require_hashes = True
        else:
            log.info("%s: %s ignored: %s", where, name, _NOTED[name])


def _include(name: str, value: str, where: str, path: Path, result: RequirementsFile, stack: tuple[Path, ...],
             constraint: bool) -> None:
    _no_variable(value, where)
    if "://" in value:
        raise UsageError(f"{where}: {name} {_redacted(value)} includes a file by URL, which can change once locked",
                         fix="download it next to this file and include it by its path")
    target = path.parent / value  # pip: relative to the including file, not the working directory
    if target.resolve() in stack:
        raise UsageError(f"{where}: {name} {value} includes a file that includes this one", fix="remove the cycle")
    # Everything a constraints file pulls in is a constraint too, as pip reads it.
    _read(target, result, stack, constraint or name == "--constraint", named_by=f"{where}: {name} {value}")


def _requirement(line: str, where: str, constraint: bool) -> Entry:
    _no_variable(line, where)
    # pip's split: the requirement runs up to the first space-separated token starting with '-'.
    tokens = line.split(" ")
    cut = next((index for index, token in enumerate(tokens) if token.startswith("-")), len(tokens))
    text, options = " ".join(tokens[:cut]).strip(), " ".join(tokens[cut:])
    try:
        requirement = Requirement(text)
    except InvalidRequirement as error:
        if _location(text):
            raise UsageError(f"{where}: {_redacted(text)!r} installs from {_location(text)}, not from the index",
                             fix=_PIN_FIX) from None
        raise UsageError(f"{where}: {text!r} is not a requirement ({error})",
                         fix="write name==version (extras and markers as pip takes them)") from None
    if requirement.url:
        raise UsageError(f"{where}: {requirement.name} @ {_redacted(requirement.url)} installs from "
                         f"{_location(requirement.url)}, not from the index", fix=_PIN_FIX)
    if constraint and requirement.extras:
        raise UsageError(f"{where}: a constraint cannot have extras (pip refuses them)",
                         fix=f"write {requirement.name}{requirement.specifier} without the [extras]")
    hashes = set()
    for name, value in _options(options, where):
        if name != "--hash":
            raise UsageError(f"{where}: {name} on a requirement's line: coldchain installs only wheels, so only "
                             "--hash means something here", fix=f"remove {name}")
        if not _HASH.match(value):
            raise UsageError(f"{where}: --hash={value} is not algorithm:hexdigest", fix="write --hash=sha256:<hex>")
        hashes.add(value.lower())
    return Entry(requirement, frozenset(hashes), where, constraint)


def _location(text: str) -> str | None:
    """What a requirement that names no package of an index points at; None for a misspelt one."""
    if _VCS.search(text):
        return "a VCS checkout"
    if "://" in text and not text.startswith("file:"):
        return "a URL"
    if text.startswith(("file:", ".", "~")) or "/" in text or "\\" in text or text.lower().endswith(_ARCHIVES):
        return "a local path"
    return None


def _redacted(text: str) -> str:
    return _CREDENTIALS.sub(r"\1***@", text)
