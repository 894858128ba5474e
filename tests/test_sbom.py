"""The SBOM of a hashed lock (cyclonedx-bom), and what the host adds to a model directory a step
wrote: environment/sbom.cdx.json, then model.sig over it (no Docker)."""

from __future__ import annotations

import json

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from coldchain.contract import SIGNATURE_FILE
from coldchain.environments.locks import parse_lock
from coldchain.environments.sbom import sbom_bytes
from coldchain.errors import LockError
from coldchain.steps.model_finish import finish_model
from coldchain.steps.signing import verify_directory
from conftest import ROOT
from test_signing import make_key, make_model

LOCK = ROOT / "requirements-infer.lock"


@pytest.fixture(scope="module")
def sbom() -> bytes:
    return sbom_bytes(LOCK)


def test_every_pin_of_the_lock_is_a_component_with_its_hashes(sbom):
    document = json.loads(sbom)
    assert document["bomFormat"] == "CycloneDX"
    components = {component["name"].lower().replace("_", "-"): component for component in document["components"]}
    lock = parse_lock(LOCK)
    assert set(components) == set(lock.pins)
    for name, pin in lock.pins.items():
        component = components[name]
        assert component["version"] == pin.version and component["purl"] == f"pkg:pypi/{name}@{pin.version}"
        hashes = {f"sha256:{entry['content']}" for reference in component["externalReferences"]
                  for entry in reference.get("hashes", [])}
        assert hashes == set(pin.hashes), name


def test_the_sbom_is_valid_cyclonedx_and_reproducible(sbom):
    document = json.loads(sbom)
    version = SchemaVersion.from_version(document["specVersion"])
    assert JsonStrictValidator(version).validate_str(sbom.decode()) is None
    assert "serialNumber" not in document and "timestamp" not in document.get("metadata", {})
    assert sbom_bytes(LOCK) == sbom  # same lock, same bytes: a re-made SBOM keeps a signature valid


def test_a_missing_lock_is_named(tmp_path):
    with pytest.raises(LockError, match="nothing.lock: lock not found"):
        sbom_bytes(tmp_path / "nothing.lock")


def test_the_model_directory_gets_the_sbom_and_the_signature_covers_it(tmp_path):
    private, public, _ = make_key(tmp_path, "maker")
    model = make_model(tmp_path / "model")
    (model / "environment" / "sbom.cdx.json").unlink()
    finish_model(model, lock=LOCK, sign_key=private)
    written = model / "environment" / "sbom.cdx.json"
    assert written.read_bytes() == sbom_bytes(LOCK)
    assert "environment/sbom.cdx.json" in verify_directory(model, (public,)).files


def test_without_a_key_a_copied_signature_is_dropped(tmp_path):
    """reexport copies the source's files: its model.sig no longer matches what was written."""
    private, _, _ = make_key(tmp_path, "maker")
    model = make_model(tmp_path / "model")
    finish_model(model, lock=None, sign_key=private)
    assert (model / SIGNATURE_FILE).is_file()
    finish_model(model, lock=None, sign_key=None)
    assert not (model / SIGNATURE_FILE).exists()
