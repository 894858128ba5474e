"""An image's CycloneDX SBOM, stored in its labels: made from the hashed lock it was built from (sbom.py),
gzip-compressed and base64-encoded into SBOM_LABEL by the label-only build that also adds the file
record's label, read back by `coldchain sbom IMAGE`, and checked against the lock by `images --verify`.

Why a compressed label and not the JSON: a build's labels travel in the Docker API's query string,
which the daemon caps at 1 MiB with its other headers, and a lock's SBOM is 150-260 KB of JSON
(about 300 KB escaped); compressed it is about 60 KB, so a user's lock ten times the kit's still fits.
A label needs no container to read, survives save/load and push/pull, and adds no layer, so the
image's files (and their record) stay what the Dockerfile made."""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import json
from pathlib import Path

from ..engine import ImageInfo
from ..errors import ImageCorrupt, UsageError
from .locks import Lock, normalize, parse_lock
from .sbom import sbom_bytes

SBOM_LABEL = "io.coldchain.sbom"  # base64(gzip(CycloneDX JSON))
SBOM_SHA256_LABEL = "io.coldchain.sbom.sha256"  # of the JSON itself: compare with a model's environment/sbom.cdx.json
# An input label (images.image_labels): an image built before images carried an SBOM is not up to date.
SBOM_FORMAT_LABEL = "io.coldchain.sbom.format"
SBOM_FORMAT = "CycloneDX JSON, gzip, base64"
_made: dict[str, bytes] = {}  # lock sha256 -> SBOM: cyclonedx-py costs 1-4 s and the same lock gives the same bytes


def lock_sbom(lock: Path) -> bytes:
    """The SBOM of `lock`, made once per lock content in this process (its path is not in it)."""
    if not lock.is_file():
        return sbom_bytes(lock)  # which names the missing lock
    key = hashlib.sha256(lock.read_bytes()).hexdigest()
    if key not in _made:
        _made[key] = sbom_bytes(lock)
    return _made[key]


def sbom_labels(lock: Path) -> dict[str, str]:
    """The labels that store the SBOM of `lock` with an image."""
    document = lock_sbom(lock)
    packed = base64.b64encode(gzip.compress(document, mtime=0)).decode("ascii")
    return {SBOM_LABEL: packed, SBOM_SHA256_LABEL: hashlib.sha256(document).hexdigest()}


def image_sbom(info: ImageInfo, ref: str) -> bytes:
    """The SBOM the image `ref` carries; ImageCorrupt where it has none or it does not decode."""
    packed = info.labels.get(SBOM_LABEL)
    if not packed:
        raise ImageCorrupt(f"{ref}: the image has no {SBOM_LABEL} label: built before images carried an SBOM, "
                           "or not built by coldchain", fix="rebuild it: 'coldchain images' (or the command that "
                                                            "made it, e.g. adopt --requirements or drift-test)")
    try:
        document = gzip.decompress(base64.b64decode(packed, validate=True))
    except (binascii.Error, OSError, EOFError) as error:
        raise ImageCorrupt(f"{ref}: its {SBOM_LABEL} label does not decode (base64, gzip): {error}",
                           fix="rebuild it with 'coldchain images --force'") from None
    if hashlib.sha256(document).hexdigest() != info.labels.get(SBOM_SHA256_LABEL):
        raise ImageCorrupt(f"{ref}: its SBOM's sha256 is not its {SBOM_SHA256_LABEL} label's",
                           fix="rebuild it with 'coldchain images --force'")
    return document


def _components(document: bytes) -> dict[str, tuple[str, frozenset[str]]]:
    """name -> (version, {"sha256:<hex>"}) for every component of a CycloneDX document."""
    components = {}
    for component in json.loads(document).get("components", []):
        hashes = frozenset(f"sha256:{entry.get('content', '')}" for reference in component.get("externalReferences", [])
                           for entry in reference.get("hashes", []) if entry.get("alg") == "SHA-256")
        components[normalize(component.get("name", ""))] = (component.get("version", ""), hashes)
    return components


def sbom_mismatches(info: ImageInfo, ref: str, lock: Lock) -> tuple[str, ...]:
    """What differs between the SBOM `ref` carries and the lock it names: the lock's sha256 (its label),
    then each pin missing, added or with another version or other hashes. Empty: they agree."""
    try:
        document = image_sbom(info, ref)
        components = _components(document)
    except ImageCorrupt as error:
        return (f"SBOM: {error.message}",)
    except ValueError as error:  # json.JSONDecodeError
        return (f"SBOM: not JSON ({error})",)
    found = []
    if info.labels.get("io.coldchain.lock.sha256") not in (None, lock.sha256):
        found.append(f"SBOM: the image was built from another lock than {lock.path.name} (its lock's sha256 differs)")
    for name, pin in sorted(lock.pins.items()):
        version, hashes = components.get(name, (None, frozenset()))
        if version is None:
            found.append(f"SBOM: {name}=={pin.version} is in {lock.path.name} but not in the SBOM")
        elif version != pin.version:
            found.append(f"SBOM: {name}=={version}, but {lock.path.name} pins {pin.version}")
        elif hashes != pin.hashes:
            found.append(f"SBOM: {name}=={version}: its wheel hashes are not those {lock.path.name} pins")
    found += [f"SBOM: {name}=={components[name][0]} is not in {lock.path.name}"
              for name in sorted(set(components) - set(lock.pins))]
    return tuple(found)


def read_lock(path: Path) -> Lock:
    if not path.is_file():
        raise UsageError(f"{path}: lock not found", fix="name the lock the image was built from (--lock)")
    return parse_lock(path)
