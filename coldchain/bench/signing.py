"""What signing costs: sign and verify a copy of make freeze's model directory (ResNet v1 50, ~94 MB),
best of a few repeats each, with a fresh P-256 key. No container; the hashing is the cost."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..contract import MANIFEST_FILE, SIGNATURE_FILE
from ..errors import UsageError
from ..steps.signing import sign_directory, verify_directory


@dataclass(frozen=True)
class SigningBenchOptions:
    model: Path  # a model directory (make freeze's out/model)
    out: Path  # scratch: the copy signed and verified, and the key
    repeats: int = 3


def _key(folder: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / "bench-key.pem", folder / "bench-key.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def _best(repeats: int, action) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return round(min(times), 3)


def bench_signing(options: SigningBenchOptions) -> dict:
    if not (options.model / MANIFEST_FILE).is_file():
        raise UsageError(f"{options.model}: no model directory to sign", fix="run 'make freeze' first")
    shutil.rmtree(options.out, ignore_errors=True)
    options.out.mkdir(parents=True)
    copy = options.out / "model"
    shutil.copytree(options.model, copy, ignore=shutil.ignore_patterns(SIGNATURE_FILE))
    private, public = _key(options.out)
    sign_s = _best(options.repeats, lambda: sign_directory(copy, private))
    verified = verify_directory(copy, (public,))
    verify_s = _best(options.repeats, lambda: verify_directory(copy, (public,)))
    size = sum(path.stat().st_size for path in copy.rglob("*") if path.is_file() and path.name != SIGNATURE_FILE)
    shutil.rmtree(options.out, ignore_errors=True)
    return {"model_directory": {"bytes": size, "files": len(verified.files), "sign_s": sign_s, "verify_s": verify_s,
                                "repeats": options.repeats}}
