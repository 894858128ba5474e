"""The bf16 budget's rule and its manifest field, without TensorFlow or numpy: a bf16 run is judged by
what bf16 rounding measurably does to the model (times the safety factor), never tighter than the
declared fraction; a manifest from before the budget keeps today's rule and the report says so; a
broken budget is named by its field. The measurement itself runs in the images (test_adopt_docker)."""

from __future__ import annotations

import copy
import struct
import sys

import pytest

from coldchain.contract import BF16_BUDGET_SAFETY_FACTOR, DEFAULT_BF16_TOLERANCE
from coldchain.drift.report import markdown
from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))  # the container side's plain-Python modules (no numpy needed)
from incontainer.golden import budget  # noqa: E402
from incontainer.graph.manifest import _validate_golden_section  # noqa: E402


def validate(manifest: dict) -> list:
    """The manifest validator's golden section (the whole validator needs numpy for the preprocessing)."""
    return _validate_golden_section(manifest["golden"])

MEASURED = {"logits": {"max_abs_diff": 0.25, "fraction_of_magnitude": 0.031},
            "probabilities": {"max_abs_diff": 0.04, "fraction_of_magnitude": 0.2}}
MANIFEST = {
    "schema_version": 1, "model": {"file": "model.pb", "sha256": "ab" * 32},
    "inputs": [{"name": "input", "shape": [None, 32, 32, 3]}],
    "outputs": [{"name": "logits", "role": "logits"}, {"name": "probabilities", "role": "probabilities"}],
    "preprocessing": {"preset": "coldchain", "height": 32, "width": 32},
    "labels": ["a", "b", "c"],
    "golden": {"input_key": "input", "tensors": [
        {"key": "logits", "name": "logits:0", "abs_tol": 0.002, "rel_tol": 0.001},
        {"key": "probabilities", "name": "probabilities:0", "abs_tol": 0.001, "rel_tol": 0.001}],
        "precision_budget": {"bf16": {"emulation": "...", "rounded_tensors": 106, "tensors": MEASURED,
                                      "top1": {"key": "logits", "agree": 4, "count": 4}}}},
}


def test_the_measured_budget_widens_the_tolerance_never_narrows_it():
    # An unsaturated softmax: the fraction of the largest probability (0.2) allows 0.006, bf16 moved 0.04.
    assert budget.bf16_tolerance(0.001, DEFAULT_BF16_TOLERANCE * 0.2, 0.04) == BF16_BUDGET_SAFETY_FACTOR * 0.04
    # Where the fraction is the wider one (the kit's saturated model), it stays: the old rule is the floor.
    assert budget.bf16_tolerance(0.002, 0.6, 0.01) == 0.6
    assert budget.bf16_tolerance(0.002, 0.0, 0.0) == 0.002
    assert BF16_BUDGET_SAFETY_FACTOR >= 2, "the emulation leaves rounding out; the factor must cover it"


def test_a_manifest_from_before_the_budget_keeps_the_fraction_and_says_so():
    old = copy.deepcopy(MANIFEST)
    del old["golden"]["precision_budget"]
    assert validate(old) == [] and budget.bf16_deviations(old) is None
    assert budget.bf16_tolerance(0.001, 0.006, None) == 0.006, "today's rule, unchanged"
    rule = budget.precision_rule(None, DEFAULT_BF16_TOLERANCE)
    assert rule["budget"] is False and "predates the measured bf16 budget" in rule["text"]
    assert "freeze or adopt the model again" in rule["text"]
    measured = budget.precision_rule(budget.bf16_deviations(MANIFEST), DEFAULT_BF16_TOLERANCE)
    assert measured["budget"] is True and measured["safety_factor"] == BF16_BUDGET_SAFETY_FACTOR
    assert budget.bf16_deviations(MANIFEST) == {"logits": 0.25, "probabilities": 0.04}


@pytest.mark.parametrize("edit, field", [
    (lambda b: b.update(bf16=[]), "golden.precision_budget"),
    (lambda b: b["bf16"].update(tensors={}), "golden.precision_budget.bf16.tensors"),
    (lambda b: b["bf16"]["tensors"]["logits"].update(max_abs_diff=-1.0),
     "golden.precision_budget.bf16.tensors.logits.max_abs_diff"),
    (lambda b: b["bf16"]["tensors"]["logits"].update(max_abs_diff=float("nan")), "tensors.logits.max_abs_diff"),
    (lambda b: b["bf16"]["tensors"]["logits"].update(max_abs_diff="0.1"), "tensors.logits.max_abs_diff"),
    (lambda b: b["bf16"]["tensors"].update(block9={"max_abs_diff": 0.1}), "golden.precision_budget.bf16.tensors.block9"),
])
def test_a_broken_budget_is_named_by_its_field(edit, field):
    assert validate(MANIFEST) == []
    broken = copy.deepcopy(MANIFEST)
    edit(broken["golden"]["precision_budget"])
    problems = validate(broken)
    assert len(problems) == 1 and field in problems[0].field, problems
    assert "freeze / adopt" in problems[0].message


def _bf16_bits(value: float) -> int:
    """What the emulated graph computes, on a float32's bits: 0x7FFF plus the lowest kept bit, 16 dropped."""
    bits = struct.unpack("<i", struct.pack("<f", value))[0]
    lowest_kept = (bits >> budget.ROUNDING_CONSTANTS["sixteen"]) & budget.ROUNDING_CONSTANTS["one"]
    return (bits + lowest_kept + budget.ROUNDING_CONSTANTS["half"]) & budget.ROUNDING_CONSTANTS["mask"]


@pytest.mark.parametrize("value, expected", [
    (1.0, 1.0), (-2.5, -2.5), (1 + 2 ** -9, 1.0),  # 7 mantissa bits: 1 + 2^-7 is the next value
    (1 + 2 ** -8, 1.0), (1 + 3 * 2 ** -8, 1 + 2 ** -6),  # ties go to the even mantissa, down or up
    (1 + 3 * 2 ** -9, 1 + 2 ** -7), (-(1 + 3 * 2 ** -9), -(1 + 2 ** -7)),  # above half: away from zero
    (3.14159265, 3.140625), (1e-3, 0.00099945068359375)])
def test_the_rounding_constants_round_to_nearest_even(value, expected):
    assert struct.unpack("<f", struct.pack("<i", _bf16_bits(value)))[0] == expected


def test_the_drift_report_says_what_a_bf16_case_was_judged_by(project):
    from test_drift import GOLDEN, _report, _result
    from coldchain.drift.matrix import load_matrix

    matrix = load_matrix(project.path("drift/matrix.toml"))
    rule = budget.precision_rule(None, DEFAULT_BF16_TOLERANCE)
    probe = {"loaded": True, "outcome": "pass", "golden": {**GOLDEN, "bit_exact": False, "precision_rule": rule}}
    text = markdown(_report([_result(matrix, "openvino-bf16-declared", "pass", probe)]))
    assert f"**openvino-bf16-declared** (7 other runtime): {rule['text']}" in text
