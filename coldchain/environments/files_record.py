"""An image's files checked by content: the build-time record's own sha256 put in a label after the
build, and `images --verify`, which re-hashes every recorded file in the image against the record."""

from __future__ import annotations

import io
import logging
import re
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..contract import FILES_RECORD
from ..engine import Engine, ImageInfo, RunSpec
from ..errors import BuildError, ImageCorrupt

log = logging.getLogger(__name__)
FILES_LABEL = "io.coldchain.files.sha256"
RECORDED_TREES = ("/opt/venv", "/opt/coldchain")  # what the Dockerfiles' record covers
SHA256 = re.compile(r"^[0-9a-f]{64}$")
NO_RECORD = 3  # the check script's exit status when the image has no record
VERIFY_TIMEOUT_S = 900.0  # hashing a CUDA venv (about 7 GB) on a slow disk

# Prints the record's own sha256, then one line per file that differs (sha256sum -c's "FAILED" lines,
# quiet otherwise) and one per file the record lacks ("ADDED"). /tmp is the container's tmpfs.
VERIFY_SCRIPT = f"""set -u
record={FILES_RECORD}
[ -f "$record" ] || exit {NO_RECORD}
sha256sum "$record" | cut -d' ' -f1
cd / && sha256sum -c --quiet "$record" 2>/dev/null
find {' '.join(RECORDED_TREES)} -type f ! -path "$record" | LC_ALL=C sort > /tmp/files-now
sed 's/^[0-9a-f]*  //' "$record" | LC_ALL=C sort > /tmp/files-recorded
LC_ALL=C comm -13 /tmp/files-recorded /tmp/files-now | sed 's/$/: ADDED/'
exit 0
"""


def record_digest(engine: Engine, image_id: str, tag: str) -> str:
    """The sha256 of the image's file record, read by running the image."""
    result = engine.run(RunSpec(image=image_id, command=("sha256sum", FILES_RECORD), timeout_s=120.0))
    digest = result.stdout.split()[0] if result.stdout.split() else ""
    if result.exit_code != 0 or not SHA256.match(digest):
        raise BuildError(f"{tag}: the image has no readable file record {FILES_RECORD} (exit {result.exit_code})",
                         image=tag, log_tail=result.stderr[-2000:] or None,
                         fix="its Dockerfile must write the record as its last step (see Dockerfile.infer)")
    return digest


def label_with_record(engine: Engine, info: ImageInfo, tag: str, labels: dict[str, str]) -> ImageInfo:
    """The image again, with its record's sha256 as FILES_LABEL: a label-only build on top of it (no
    new layer), since a Dockerfile's labels are fixed before any of its files exist."""
    digest = record_digest(engine, info.id, tag)
    with tempfile.TemporaryDirectory(prefix="coldchain-label-") as tmp:
        context = Path(tmp) / "context.tar"
        dockerfile = f"FROM {info.id}\n".encode()
        with tarfile.open(context, "w") as archive:
            entry = tarfile.TarInfo("Dockerfile")
            entry.size = len(dockerfile)
            archive.addfile(entry, io.BytesIO(dockerfile))
        # Its log is this module's, at debug level: the image's own build log stays the image's.
        return engine.build(context, dockerfile="Dockerfile", buildargs={}, labels={**labels, FILES_LABEL: digest},
                            tag=tag, log=lambda line: log.debug("%s label | %s", tag, line))


@dataclass(frozen=True)
class Verified:
    tag: str
    image_id: str
    files_ok: bool
    mismatches: tuple[str, ...]  # "path: FAILED", "path: ADDED", or what stands in for the record

    def to_dict(self) -> dict:
        return {"tag": self.tag, "id": self.image_id, "ok": self.files_ok, "mismatches": list(self.mismatches)}


def verify_image(engine: Engine, tag: str) -> Verified:
    """Re-hash the image's files against its record, and the record against its label."""
    info = engine.inspect_image(tag)
    if info is None:
        return Verified(tag, "", False, ("no such image",))
    label = info.labels.get(FILES_LABEL)
    if not label:
        return Verified(tag, info.id, False, (f"no {FILES_LABEL} label: built before images carried a file record",))
    result = engine.run(RunSpec(image=info.id, command=("sh", "-c", VERIFY_SCRIPT), timeout_s=VERIFY_TIMEOUT_S))
    if result.exit_code == NO_RECORD:
        return Verified(tag, info.id, False, (f"{FILES_RECORD}: missing",))
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    if result.exit_code != 0 or not lines or not SHA256.match(lines[0]):
        raise ImageCorrupt(f"{tag}: its files could not be checked (exit {result.exit_code})",
                           log_tail=(result.stderr or result.stdout)[-2000:] or None,
                           fix="rebuild it with 'coldchain images --force'")
    mismatches = list(lines[1:])
    if lines[0] != label:
        mismatches.insert(0, f"{FILES_RECORD}: FAILED (its sha256 is not the label's)")
    return Verified(tag, info.id, not mismatches, tuple(mismatches))


def raise_if_corrupt(results: list[Verified]) -> None:
    bad = [result for result in results if not result.files_ok]
    if bad:
        shown = "; ".join(f"{result.tag}: {', '.join(result.mismatches[:5])}"
                          f"{f' (+{len(result.mismatches) - 5} more)' if len(result.mismatches) > 5 else ''}"
                          for result in bad)
        sbom = any(mismatch.startswith("SBOM: ") for result in bad for mismatch in result.mismatches)
        raise ImageCorrupt(f"{len(bad)} of {len(results)} images differ from their build-time file record"
                           f"{' or from their lock (SBOM)' if sbom else ''}: {shown}",
                           fix="rebuild them without Docker's layer cache: 'coldchain images --force' "
                               "(a corrupted layer survives a cached rebuild)")
