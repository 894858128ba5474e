"""Signing a model directory and refusing every tampered variant of it (no Docker): each file flipped
by one byte, a file added, a file removed, the manifest re-hashed, re-signed with another key."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from coldchain.cli import main
from coldchain.contract import SIGNATURE_FILE, Exit
from coldchain.errors import SignatureError, UsageError
from coldchain.steps.signing import sign_directory, verify_directory, verify_if_trusted


def make_key(folder: Path, name: str) -> tuple[Path, Path, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / f"{name}.pem", folder / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public, key


def make_model(directory: Path) -> Path:
    """A model directory as freeze writes it (content made up; the signature does not read it)."""
    (directory / "environment").mkdir(parents=True)
    model = bytes(range(256)) * 64
    (directory / "model.pb").write_bytes(model)
    (directory / "manifest.json").write_text(json.dumps({"model": {"sha256": hashlib.sha256(model).hexdigest()}}))
    (directory / "golden.npz").write_bytes(b"PK\x03\x04golden" * 10)
    (directory / "labels.txt").write_text("cat\ndog\n")
    (directory / "environment" / "requirements.lock").write_text("numpy==1.26.4 --hash=sha256:00\n")
    (directory / "environment" / "sbom.cdx.json").write_text('{"bomFormat": "CycloneDX"}')
    return directory


@pytest.fixture
def signed(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    private, public, key = make_key(keys, "maker")
    other_private, other_public, _ = make_key(keys, "other")
    model = make_model(tmp_path / "model")
    sign_directory(model, private)
    return model, private, public, other_private, other_public, key


def tampered_variants(model: Path, other_key: Path, scratch: Path):
    """(what, directory) for every tampering the README counts."""
    index = 0

    def copy() -> Path:
        nonlocal index
        index += 1
        target = scratch / f"variant-{index}"
        shutil.copytree(model, target)
        return target

    for name in sorted(p.relative_to(model).as_posix() for p in model.rglob("*") if p.is_file()):
        if name == SIGNATURE_FILE:
            continue
        variant = copy()
        data = bytearray((variant / name).read_bytes())
        data[len(data) // 2] ^= 0x01
        (variant / name).write_bytes(bytes(data))
        yield f"{name} flipped by one byte", variant
    variant = copy()
    (variant / "extra.txt").write_text("added")
    yield "a file added", variant
    variant = copy()
    (variant / "environment" / "sbom.cdx.json").unlink()
    yield "a file removed", variant
    variant = copy()
    model_bytes = b"another graph"
    (variant / "model.pb").write_bytes(model_bytes)
    (variant / "manifest.json").write_text(json.dumps({"model": {"sha256": hashlib.sha256(model_bytes).hexdigest()}}))
    yield "model replaced and the manifest re-hashed", variant
    variant = copy()
    (variant / "model.pb").write_bytes(model_bytes)
    sign_directory(variant, other_key)
    yield "replaced and re-signed with another key", variant


def test_untampered_verifies_and_lists_every_file(signed):
    model, _, public, *_ = signed
    verified = verify_directory(model, (public,))
    assert set(verified.files) == {"model.pb", "manifest.json", "golden.npz", "labels.txt",
                                   "environment/requirements.lock", "environment/sbom.cdx.json"}
    assert verified.files["model.pb"] == hashlib.sha256((model / "model.pb").read_bytes()).hexdigest()
    assert verify_if_trusted(model, ()) is None


def test_every_tampered_variant_is_refused(signed, tmp_path):
    model, _, public, other_private, _, _ = signed
    refused, variants = [], list(tampered_variants(model, other_private, tmp_path / "variants"))
    for what, variant in variants:
        try:
            verify_directory(variant, (public,))
        except SignatureError as error:
            refused.append(what)
            assert "\n" not in error.message and str(variant) in error.message, error.message
    assert refused == [what for what, _ in variants], f"refused {len(refused)}/{len(variants)}"
    assert len(variants) == 10


def test_messages_name_the_file(signed, tmp_path):
    model, _, public, *_ = signed
    (model / "labels.txt").write_text("cat\nwolf\n")
    with pytest.raises(SignatureError, match=r"labels.txt: changed after signing"):
        verify_directory(model, (public,))
    (model / "labels.txt").unlink()
    with pytest.raises(SignatureError, match=r"labels.txt: missing"):
        verify_directory(model, (public,))


def test_unsigned_and_untrusted(signed, tmp_path):
    model, _, public, _, other_public, _ = signed
    with pytest.raises(SignatureError, match="not signed by a trusted key"):
        verify_directory(model, (other_public,))
    verify_directory(model, (other_public, public))  # any trusted key will do
    (model / SIGNATURE_FILE).unlink()
    with pytest.raises(SignatureError, match="not signed"):
        verify_directory(model, (public,))


def test_certificate_as_trust(signed, tmp_path):
    model, *_, key = signed
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "model maker")])
    import datetime
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
                   .sign(key, hashes.SHA256()))
    pem = tmp_path / "maker.crt"
    pem.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    assert verify_directory(model, (pem,)).trusted_by == pem


def test_symlink_refused(signed, tmp_path):
    model, private, public, *_ = signed
    (model / "outside").symlink_to(tmp_path)
    with pytest.raises(SignatureError, match="symlink"):
        verify_directory(model, (public,))


def test_bad_key_is_a_usage_error(tmp_path):
    model = make_model(tmp_path / "model")
    (tmp_path / "key.pem").write_text("not a key")
    with pytest.raises(UsageError, match="key.pem"):
        sign_directory(model, tmp_path / "key.pem")
    assert not (model / SIGNATURE_FILE).exists()


def test_cli_sign_and_verify(signed, tmp_path):
    model, private, public, _, other_public, _ = signed
    runner = CliRunner()
    result = runner.invoke(main, ["sign", str(model), "--sign-key", str(private)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["verify", str(model), "--trust", f"{other_public},{public}"])
    assert result.exit_code == 0, result.output
    (model / "golden.npz").write_bytes(b"x")
    result = runner.invoke(main, ["verify", str(model)], env={"COLDCHAIN_TRUST": str(public)})
    assert result.exit_code == Exit.USAGE
    assert "golden.npz: changed after signing" in result.output


def test_the_container_rehashes_the_mounted_files(signed, monkeypatch):
    """What the host verified travels in COLDCHAIN_SIGNED_FILES; the container's ModelLoader re-hashes
    the mount against it (the model's bytes as it read them) and refuses a file changed, added or gone."""
    import sys

    from conftest import ROOT
    sys.path.insert(0, str(ROOT / "scripts"))
    from incontainer.common import InsideError
    from incontainer.graph.model_files import signed_files, verify_signed

    model, _, public, *_ = signed
    files = verify_directory(model, (public,)).files
    monkeypatch.setenv("COLDCHAIN_SIGNED_FILES", json.dumps(files))
    assert signed_files(str(model)) == files
    verify_signed(str(model), files, {})
    model_pb = str((model / "model.pb").resolve())
    with pytest.raises(InsideError, match="model.pb: sha256 differs"):
        verify_signed(str(model), files, {model_pb: b"the bytes the process actually read"})
    (model / "environment" / "extra").write_text("x")
    with pytest.raises(InsideError, match="extra: not covered"):
        verify_signed(str(model), files, {})
    (model / "environment" / "extra").unlink()
    (model / "labels.txt").unlink()
    with pytest.raises(InsideError, match="labels.txt: missing"):
        verify_signed(str(model), files, {})


def test_the_bench_signs_and_verifies_a_copy(tmp_path):
    from coldchain.bench.signing import SigningBenchOptions, bench_signing

    model = make_model(tmp_path / "model")
    result = bench_signing(SigningBenchOptions(model=model, out=tmp_path / "bench", repeats=1))["model_directory"]
    assert result["files"] == 6 and result["bytes"] == sum(p.stat().st_size for p in model.rglob("*") if p.is_file())
    assert not (model / SIGNATURE_FILE).exists() and not (tmp_path / "bench").exists()


def test_doctor_and_drift_test_verify_before_any_container(project, tmp_path):
    from fake_engine import FakeEngine

    from coldchain.drift.commands import DriftTestRequest, drift_test
    from coldchain.steps.diagnose import DoctorRequest, run_doctor

    _, public, _ = make_key(tmp_path, "maker")
    model = make_model(tmp_path / "model")
    engine = FakeEngine()
    with pytest.raises(SignatureError, match="model.sig: missing"):
        run_doctor(engine, project, DoctorRequest(model=model, trust=(public,)))
    assert engine.runs == []
    with pytest.raises(SignatureError, match="model.sig: missing"):
        drift_test(lambda: pytest.fail("no engine before the signature holds"), project,
                   DriftTestRequest(model=model, out=tmp_path / "drift", trust=(public,)))
    assert not (tmp_path / "drift").exists()


def test_freeze_with_a_sign_key_writes_the_sbom_then_signs(project, tmp_path, monkeypatch):
    """The host side of `freeze --sign-key` against the fake engine: the container's model directory,
    the training image's SBOM added, everything signed, then renamed into place."""
    from fake_engine import FakeEngine

    from coldchain.config import IMAGES
    from coldchain.engine import ImageInfo, RunResult
    from coldchain.environments.bases import ResolvedBase
    from coldchain.environments.images import BuiltImage
    from coldchain.environments.sbom import sbom_bytes
    from coldchain.steps.chain import FreezeRequest, freeze

    image = BuiltImage(IMAGES["train-cpu"], "t-train:cpu", ImageInfo("sha256:abc", ("t-train:cpu",), {}, 1),
                       ResolvedBase("b", "sha256:b", "local", "3.11.2"), False)
    monkeypatch.setattr("coldchain.steps.chain.ensure_images", lambda *args, **kwargs: image)
    monkeypatch.setattr("coldchain.steps.chain.freeze_arguments", lambda project: ["--threads", "2,1"])
    engine = FakeEngine()

    def container(spec):
        (staging,) = [mount.source for mount in spec.mounts if mount.target == "/out"]
        shutil.rmtree(staging)
        make_model(staging)
        (staging / "environment" / "sbom.cdx.json").unlink()
        return RunResult(0, "", "")

    engine.run_handler = container
    private, public, _ = make_key(tmp_path, "maker")
    (tmp_path / "run").mkdir()
    out = tmp_path / "model"
    freeze(engine, project, FreezeRequest(tmp_path / "run", out, sign_key=private))
    assert (out / "environment" / "sbom.cdx.json").read_bytes() == sbom_bytes(project.path("requirements.lock"))
    assert "environment/sbom.cdx.json" in verify_directory(out, (public,)).files
