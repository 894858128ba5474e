"""The Makefile refuses a mistyped variable instead of silently ignoring it (no daemon needed)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import IN_CI, ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None and not IN_CI, reason="make is not installed")


def make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True, check=False, shell=False)


def test_a_typo_in_a_make_variable_names_the_nearest_one():
    result = make("train", "TRIAN_ARGS=--max-steps 3 --lr=0.1")
    assert result.returncode != 0
    assert "unknown make variable TRIAN_ARGS (did you mean TRAIN_ARGS?)" in result.stderr


def test_known_variables_with_spaces_and_equals_signs_pass():
    result = make("help", "TRAIN_ARGS=--max-steps 3 --lr=0.1", "OUT=elsewhere", "DRIFT_ARGS=--case tf2.21")
    assert result.returncode == 0, result.stderr


def test_doctor_and_drift_test_of_a_given_model_need_only_the_images():
    for target in ("doctor", "drift-test"):
        result = make(target, "MODEL=some/adopted/model", "OUT=/nonexistent-out")
        assert result.returncode == 0, result.stderr
        assert "coldchain train" not in result.stdout and "coldchain data" not in result.stdout, target
        assert "some/adopted/model" in result.stdout
    result = make("doctor", "OUT=/nonexistent-out")
    assert "coldchain freeze" in result.stdout, "without MODEL the kit's own chain comes first"
