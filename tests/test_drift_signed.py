"""drift-test --trust past the host's check (fake engine, no daemon): the containers that read the signed
model directory itself (the default variant's probes, a re-export made from it) get what the host
verified and re-hash the mount, scoped to that one mount where a probe reads variants beside it; a
difference they find refuses the whole run (exit 2), with no report written."""

from __future__ import annotations

import json
import sys

import pytest

from coldchain.contract import (ENV_SIGNED_FILES, ENV_SIGNED_MODEL_DIR, MODULES, SIGNED_DIRECTORY_CHANGED, Exit,
                                error_line)
from coldchain.drift.probe import model_mount
from coldchain.engine import RunResult
from coldchain.environments.matrix import DEFAULT_VARIANT
from coldchain.errors import SignatureError
from conftest import ROOT
from coldchain.steps.signing import sign_directory, verify_directory
from test_drift import run_fake_drift_test
from test_signing import signed  # noqa: F401 - the fixture: a signed model directory and its keys

SIGNED = {"model.pb": "ab" * 32, "manifest.json": "cd" * 32}
VERIFIED = ((ENV_SIGNED_FILES, json.dumps(SIGNED, sort_keys=True)),)  # as steps.signing.container_environment


def probe_plans(runs) -> list[tuple[set[str], dict]]:
    """(the model mounts its cases read, its environment) of each probe container."""
    found = []
    for run in runs:
        if run.command[2] == MODULES["probe"]:
            plan = json.loads(run.command[run.command.index("--plan") + 1])
            found.append(({entry["args"][entry["args"].index("--model") + 1] for entry in plan}, run.environment))
    return found


@pytest.mark.parametrize("isolate", [False, True], ids=["shared-containers", "one-per-case"])
def test_only_the_containers_reading_the_signed_directory_rehash_it(tmp_path, monkeypatch, project, isolate):
    _, runs = run_fake_drift_test(tmp_path, monkeypatch, project, signed_environment=VERIFIED, isolate=isolate)
    default = model_mount(DEFAULT_VARIANT)
    plans = probe_plans(runs)
    assert any(default in mounts and len(mounts) > 1 for mounts, _ in plans) != isolate  # a variant beside it
    for mounts, environment in plans:
        if default in mounts:
            assert json.loads(environment[ENV_SIGNED_FILES]) == SIGNED
            assert environment[ENV_SIGNED_MODEL_DIR] == default  # the variants beside it are not checked
        else:
            assert ENV_SIGNED_FILES not in environment and ENV_SIGNED_MODEL_DIR not in environment
    assert any(default not in mounts for mounts, _ in plans) == isolate  # the re-exported case alone
    reexport = next(run for run in runs if run.command[2] == MODULES["reexport"])  # made from the signed model
    assert json.loads(reexport.environment[ENV_SIGNED_FILES]) == SIGNED and ENV_SIGNED_MODEL_DIR not in \
        reexport.environment


def test_without_trust_no_container_is_told_of_a_signature(tmp_path, monkeypatch, project):
    _, runs = run_fake_drift_test(tmp_path, monkeypatch, project)
    assert runs and not any(ENV_SIGNED_FILES in run.environment or ENV_SIGNED_MODEL_DIR in run.environment
                            for run in runs)


def test_a_directory_changed_after_the_hosts_check_refuses_the_run(tmp_path, monkeypatch, project, signed):
    """drift_test itself: the host verifies model.sig, hands the list to the probe of the signed mount,
    whose container finds a file changed since; exit 2 naming it, and no report."""
    from coldchain.drift.commands import DriftTestRequest, drift_test
    from fake_engine import FakeEngine, found_images
    from test_drift import E2E_MATRIX, write

    model, _, public, *_ = signed
    (model / "environment" / "requirements.lock").unlink()  # (no model environment case: none of the point)
    (model / "environment" / "sbom.cdx.json").unlink()
    sign_directory(model, signed[1])
    engine = FakeEngine()

    def handler(spec):
        if ENV_SIGNED_MODEL_DIR in spec.environment:  # the probe reading the signed mount
            assert json.loads(spec.environment[ENV_SIGNED_FILES]) == verify_directory(model, (public,)).files
            return RunResult(Exit.USAGE, "", error_line(f"/models/default/model.pb: sha256 differs from the "
                                                        f"verified signature - {SIGNED_DIRECTORY_CHANGED}; copy "
                                                        "it again from where it was signed"), seconds=1.0)
        return RunResult(0, "", "", seconds=1.0)

    engine.run_handler = handler
    monkeypatch.setattr("coldchain.environments.images.build_images", found_images)
    out = tmp_path / "drift"
    with pytest.raises(SignatureError, match="model.pb: sha256 differs from the verified signature") as caught:
        drift_test(lambda: engine, project, DriftTestRequest(model=model, out=out, trust=(public,),
                                                             matrix_path=write(tmp_path, E2E_MATRIX)))
    assert caught.value.exit_code == Exit.USAGE == 2
    assert not list(out.glob("drift-report*")) and any(ENV_SIGNED_MODEL_DIR in run.environment for run in engine.runs)


def test_the_container_applies_the_list_to_the_scoped_mount_only(monkeypatch):
    sys.path.insert(0, str(ROOT / "scripts"))
    from incontainer.graph.model_files import signed_files

    monkeypatch.setenv(ENV_SIGNED_FILES, json.dumps(SIGNED))
    assert signed_files("/model") == SIGNED  # infer, doctor, reexport: the one model they read
    monkeypatch.setenv(ENV_SIGNED_MODEL_DIR, "/models/default")
    assert signed_files("/models/default/") == SIGNED and signed_files("/models/default") == SIGNED
    assert signed_files("/models/reexported") is None
    monkeypatch.delenv(ENV_SIGNED_FILES)
    assert signed_files("/models/default") is None
