"""Judging a drift case: what its expectation means for the numbers it computed, and which findings
it must show."""

from __future__ import annotations

from ..contract import (EXPECT_AS_PRECISION, EXPECT_AS_REFERENCE, OUTCOME_BIT_EXACT, OUTCOME_NOT_APPLICABLE,
                        OUTCOME_PASS, PASS_OUTCOMES, PRECISION_FP32, PRECISION_RUNTIME_DEFAULT, Code)
from ..environments.matrix import CaseSpec


def resolve_expectation(expected: str, numerics_differences: list[str] | None,
                        precision_effective: str | None = None) -> str:
    """as-reference: bit-exact where the case computed with the golden's effective numerics (same TF,
    oneDNN state, ISA and thread pools), within tolerance where any of them differ or is unknown.
    as-precision: within tolerance where the runtime chose fp32 by itself, golden-mismatch where it
    chose less (bf16 on CPUs with AVX512_BF16 or AMX); unknown precision expects the mismatch's absence."""
    if expected == EXPECT_AS_PRECISION:
        return OUTCOME_PASS if precision_effective in (None, PRECISION_FP32) else Code.GOLDEN_MISMATCH
    if expected != EXPECT_AS_REFERENCE:
        return expected
    return OUTCOME_BIT_EXACT if numerics_differences == [] else OUTCOME_PASS


def required_findings(case: CaseSpec, precision_effective: str | None) -> tuple[str, ...]:
    """The case's expected findings, plus reduced-precision where a runtime-default case computed below fp32."""
    if case.settings.precision == PRECISION_RUNTIME_DEFAULT and precision_effective not in (None, PRECISION_FP32):
        return case.expect_findings + (Code.REDUCED_PRECISION,)
    return case.expect_findings


def outcome_matches(expected: str, actual: str | None) -> bool:
    if expected == OUTCOME_PASS:
        return actual in PASS_OUTCOMES
    return expected == actual


def not_applicable(outcome: str | None) -> bool:
    return outcome == OUTCOME_NOT_APPLICABLE
