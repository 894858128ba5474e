"""Signing a model directory and verifying it against trusted keys, with OpenSSF model-signing: one
signature (model.sig, a Sigstore bundle made with an elliptic-curve private key, offline) over the
sha256 of every other file in the directory. Verification names the first file that differs, and
returns the verified (file, sha256) list, which the container checks the mounted bytes against."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..contract import ENV_SIGNED_FILES, SIGNATURE_FILE
from ..errors import SignatureError, UsageError

NOT_VERIFIED = "not verified"
SIGN_FIX = "sign it where it is made: coldchain sign DIR --sign-key KEY (or freeze/adopt/reexport --sign-key)"
# The library ignores these by default (its git paths); the signature covers everything else.
_GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")


@dataclass(frozen=True)
class Verified:
    """A model directory whose signature a trusted key made, and whose files all match it."""

    directory: Path
    trusted_by: Path  # the --trust entry that verified it
    files: dict  # relative path (posix) -> sha256, every signed file

    @property
    def status(self) -> str:
        return f"verified: {len(self.files)} files signed by the key in {self.trusted_by.name}"


def _walk(directory: Path) -> dict[str, Path]:
    """Every file the signature must cover, by its relative posix path; symlinks refused (a signed
    directory must not reach outside itself)."""
    found = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = Path(root) / name
            if path.is_symlink():
                raise SignatureError(f"{path}: a symlink in a model directory (signatures cover files only)",
                                     fix="replace the link by the file it points to, then sign again")
        dirs[:] = [d for d in dirs if not (Path(root) == directory and d in _GIT_PATHS)]
        for name in files:
            relative = (Path(root) / name).relative_to(directory).as_posix()
            if relative != SIGNATURE_FILE and relative not in _GIT_PATHS:
                found[relative] = Path(root) / name
    return found


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _hashing_config():
    from model_signing import hashing

    return hashing.Config().set_ignored_paths(paths=[SIGNATURE_FILE], ignore_git_paths=True)


def _directory(directory: Path) -> Path:
    directory = Path(directory)
    if directory.is_file():
        directory = directory.parent  # the model.pb in it
    if not directory.is_dir():
        raise UsageError(f"{directory}: not a model directory", fix="pass the directory freeze or adopt wrote")
    return directory.resolve()


def sign_directory(directory: Path, key: Path, password: str | None = None) -> Path:
    """Sign every file of `directory` (but model.sig) with the EC private key in `key`; model.sig is
    written under a temporary name after the hashing, then renamed."""
    from model_signing import signing

    directory = _directory(directory)
    key = Path(key)
    if not key.is_file():
        raise UsageError(f"{key}: signing key not found", fix="pass an elliptic-curve private key (PEM) to --sign-key")
    _walk(directory)
    target = directory / SIGNATURE_FILE
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".model.sig-")
    os.close(handle)
    os.unlink(temporary)  # not there while the directory is hashed
    try:
        config = signing.Config().set_hashing_config(_hashing_config())
        config.use_elliptic_key_signer(private_key=key, password=password).sign(directory, temporary)
        os.replace(temporary, target)
    except (ValueError, TypeError) as error:
        raise UsageError(f"{key}: cannot sign with this key ({error})",
                         fix="pass an unencrypted elliptic-curve private key in PEM (P-256, P-384 or P-521)") from None
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return target


def public_key_pem(path: Path) -> bytes:
    """The public key of a --trust entry: a PEM public key, or an X.509 certificate (its key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise UsageError(f"{path}: trusted key not readable ({error.strerror})",
                         fix="pass public keys or certificates (PEM) to --trust") from None
    try:
        if b"BEGIN CERTIFICATE" in data:
            key = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except ValueError:
        raise UsageError(f"{path}: not a PEM public key or certificate",
                         fix="pass the signer's public key (openssl ec -pubout) or certificate to --trust") from None
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def signed_files(signature: Path) -> dict:
    """The (file -> sha256) list inside model.sig's statement (trusted only once verified)."""
    bundle = json.loads(signature.read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    return {item["name"]: item["digest"] for item in statement["predicate"]["resources"]}


def first_difference(directory: Path, expected: dict) -> str:
    """The first file that differs from the signed list, said in words."""
    actual = _walk(directory)
    for name in sorted(set(expected) | set(actual)):
        path = directory / name
        if name not in actual:
            return f"{path}: missing (it was signed)"
        if name not in expected:
            return f"{path}: added after signing"
        if file_sha256(path) != expected[name]:
            return f"{path}: changed after signing"
    return f"{directory}: differs from its signature"


def _try_key(directory: Path, signature: Path, pem: bytes) -> bool:
    """True where this key made the signature and the files match; False where another key made it;
    SignatureError where this key made it but a file differs."""
    from model_signing import verifying

    with tempfile.NamedTemporaryFile(suffix=".pem") as public:
        public.write(pem)
        public.flush()
        try:
            verifying.Config().use_elliptic_key_verifier(public_key=public.name).verify(directory, signature)
        except ValueError as error:
            if str(error).startswith("Signature mismatch"):
                raise SignatureError(first_difference(directory, signed_files(signature)),
                                     fix="copy the model directory again from where it was signed") from None
            return False
        except Exception:  # noqa: BLE001 - a damaged bundle or a signature this key did not make
            return False
    return True


def verify_directory(directory: Path, trust: tuple[Path, ...]) -> Verified:
    """The directory's signature checked against each trusted key in turn; SignatureError naming the
    file where it is unsigned, changed, or signed by a key not trusted."""
    directory = _directory(directory)
    signature = directory / SIGNATURE_FILE
    if not signature.is_file():
        raise SignatureError(f"{signature}: missing, the model directory is not signed", fix=SIGN_FIX)
    _walk(directory)
    for entry in trust:
        if _try_key(directory, signature, public_key_pem(entry)):
            return Verified(directory, Path(entry), signed_files(signature))
    names = ", ".join(Path(entry).name for entry in trust)
    raise SignatureError(f"{signature}: not signed by a trusted key ({names}), or damaged",
                         fix="pass the signer's public key or certificate to --trust, or get a copy signed by it")


def verify_if_trusted(directory: Path, trust: tuple[Path, ...]) -> Verified | None:
    """With --trust, the verified directory; without, None (the summary says "not verified")."""
    return verify_directory(directory, trust) if trust else None


def refuse_unsigned_additions(verified: Verified) -> None:
    """After a step that may write into the model directory (infer's conversions): nothing unsigned."""
    added = sorted(set(_walk(verified.directory)) - set(verified.files))
    if added:
        raise SignatureError(f"{verified.directory / added[0]}: made after the model was signed, not covered by "
                             f"{SIGNATURE_FILE}", fix="sign the directory again where it is made, conversions "
                                                  "included: coldchain convert, then coldchain sign")


def container_environment(verified: Verified | None) -> dict:
    """What the container needs to check the mounted bytes against the host's verification."""
    return {ENV_SIGNED_FILES: json.dumps(verified.files, sort_keys=True)} if verified is not None else {}


def signature_status(verified: Verified | None) -> str:
    return verified.status if verified is not None else NOT_VERIFIED


def with_signature(summary: str, verified: Verified | None) -> str:
    """A JSON summary with its "signature" added: verified by which key, or "not verified"."""
    try:
        data = json.loads(summary)
    except ValueError:
        return summary
    if not isinstance(data, dict):
        return summary
    data["signature"] = signature_status(verified)
    return json.dumps(data, sort_keys=True, indent=2 if "\n" in summary.strip() else None)  # as it came
