"""Judging a drift case: what its expectation means for the numbers it computed, which findings it
must show (the host adds its own: lock drift against the training lock), and the case's result as
the report lists it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..config import Project
from ..confine import read_manifest
from ..contract import (EXPECT_AS_PRECISION, EXPECT_AS_REFERENCE, OUTCOME_BIT_EXACT,
                        OUTCOME_NOT_APPLICABLE, OUTCOME_PASS, PASS_OUTCOMES, PRECISION_FP32, PRECISION_RUNTIME_DEFAULT,
                        SEVERITY_WARNING, Code, describe_numerics, numerics_differences)
from ..environments.images import BuiltImage
from ..environments.locks import check_all, check_fresh, disagreements
from ..environments.matrix import CaseSpec, EnvSpec

TRAINING_LOCK = "train-cpu"


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


@dataclass
class CaseResult:
    case: CaseSpec
    env: EnvSpec
    image: str
    image_labels: dict
    expected: str  # as the matrix says it
    resolved: str  # what it means for this case (as-reference -> bit-exact or pass)
    outcome: str | None
    ok: bool
    probe: dict | None
    lock_drift: list[str]
    seconds: float
    error: str | None = None
    reasons: list[str] = field(default_factory=list)
    findings: list[dict] = field(default_factory=list)  # the host's own (lock drift)
    reference_numerics: dict | None = None
    numerics_differences: list[str] | None = None
    container_s: float | None = None  # the wall time of the container the case ran in
    shared_with: int = 1  # how many cases that container ran
    overhead_s: float | None = None  # this case's share of the container's time outside every probe

    def to_json(self) -> dict:
        probe = self.probe or {}
        timing = dict(probe.get("timing") or {})
        timing["case_s"] = probe.get("seconds")
        if self.container_s is not None:
            timing.update(container_s=round(self.container_s, 3), cases_in_container=self.shared_with)
        if self.overhead_s is not None:
            timing["container_overhead_s"] = round(self.overhead_s, 3)
        return {
            "name": self.case.name, "scenario": self.case.scenario, "description": self.case.description,
            "env": self.env.name, "variant": self.case.variant, "settings": asdict(self.case.settings),
            "image": self.image, "tensorflow": self.image_labels.get("io.coldchain.tensorflow.version"),
            "python": self.image_labels.get("io.coldchain.python.version"),
            "device": self.env.device, "expected": self.expected, "resolved_expectation": self.resolved,
            "expected_findings": list(self.case.expect_findings), "outcome": self.outcome, "ok": self.ok,
            "reasons": self.reasons, "error": self.error, "lock_drift": self.lock_drift,
            "findings": self.findings, "loaded": probe.get("loaded"), "runtime_outcome": probe.get("outcome"),
            "diagnosis": probe.get("diagnosis"), "load_error": probe.get("load_error"),
            "preprocessing": probe.get("preprocessing"), "golden": probe.get("golden"),
            "latency": probe.get("latency"), "numerics": probe.get("numerics"), "runtime": probe.get("runtime"),
            "reference_numerics": self.reference_numerics, "numerics_differences": self.numerics_differences,
            "numerics_summary": describe_numerics(probe.get("numerics")), "timing": timing,
            "seconds": round(self.seconds, 2),
        }


def lock_drift(project: Project, env: EnvSpec) -> list[str]:
    """Packages the environment's lock pins at another version than the training lock."""
    if env.lock_name == TRAINING_LOCK:
        return []
    training = check_all(project, [TRAINING_LOCK])[TRAINING_LOCK]
    other = check_fresh(project, env.lock_spec) if env.lock_spec else check_all(project, [env.lock_name])[env.lock_name]
    return disagreements(training, other)


def lock_findings(env: EnvSpec, drift: list[str]) -> list[dict]:
    if not (env.must_match_training_lock and drift):
        return []
    return [{"code": Code.LOCK_DRIFT, "severity": SEVERITY_WARNING, "stage": "environment",
             "cause": f"{len(drift)} pins shared with requirements.lock differ: " + "; ".join(drift),
             "fix": f"constrain {env.image_spec().locked.source} with '-c requirements.lock' and run 'make lock'"}]


def reference_numerics(model: Path) -> dict | None:
    try:
        return read_manifest(model)["golden"].get("numerics")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def judge(case: CaseSpec, outcome: str | None, finding_codes: set[str], differences: list[str] | None,
          precision_effective: str | None = None, override_unchanged: bool = False) -> tuple[str, bool, list[str]]:
    """(resolved expectation, ok, reasons): the outcome must match and every expected finding be there.
    A preprocessing override this model's spec already has changes nothing: the case is as-reference."""
    expect = EXPECT_AS_REFERENCE if override_unchanged and case.settings.preprocessing else case.expect
    resolved = resolve_expectation(expect, differences, precision_effective)
    reasons = []
    if not outcome_matches(resolved, outcome):
        if case.expect == EXPECT_AS_PRECISION:
            why = f" (the runtime computed in {precision_effective or 'an unknown precision'})"
        elif resolved != expect:
            why = f" ({'same numerics' if differences == [] else 'numerics differ: ' + '; '.join(differences or ['unknown'])})"
        else:
            why = ""
        reasons.append(f"expected {resolved}{why}, got {outcome}")
    missing = [code for code in required_findings(case, precision_effective) if code not in finding_codes]
    if missing:
        reasons.append(f"expected findings {missing} are missing")
    return resolved, not reasons, reasons


def not_applicable_result(case: CaseSpec, env: EnvSpec, image: BuiltImage, why: str, what: str = "") -> CaseResult:
    """A case whose variant could not be made (or that this host cannot run, `what`): no container, not a
    failure."""
    return CaseResult(case=case, env=env, image=image.tag, image_labels=image.info.labels, expected=case.expect,
                      resolved=case.expect, outcome=OUTCOME_NOT_APPLICABLE, ok=True, probe=None, lock_drift=[],
                      seconds=0.0, reasons=[f"not applicable: {what or f'variant {case.variant}'}: {why}"])


def probe_result(case: CaseSpec, env: EnvSpec, image: BuiltImage, probe: dict | None, model: Path, drift: list[str],
                 error: str | None, **measured) -> CaseResult:
    """A case's result from its probe report (None: the probe gave none, `error` says why) and the
    environment's lock drift, judged against the matrix; `measured` are CaseResult's times."""
    findings = lock_findings(env, drift)
    outcome = probe.get("outcome") if probe else "error"
    report = probe or {}
    diagnosed = (report.get("diagnosis") or {}).get("findings") or []
    codes = {item["code"] for item in findings} | {item["code"] for item in diagnosed}
    reference = reference_numerics(model)
    differences = numerics_differences(reference, report.get("numerics"))
    resolved, ok, reasons = judge(case, outcome, codes, differences,
                                  (report.get("runtime") or {}).get("precision_effective"),
                                  bool((report.get("preprocessing") or {}).get("override_unchanged")))
    if not ok and error:
        reasons.append(error)
    elif not ok and diagnosed:
        reasons.append(f"{diagnosed[0]['code']}: {diagnosed[0]['cause']}")
    return CaseResult(case=case, env=env, image=image.tag, image_labels=image.info.labels, expected=case.expect,
                      resolved=resolved, outcome=outcome, ok=ok, probe=probe, lock_drift=drift, error=error,
                      reasons=reasons, findings=findings, reference_numerics=reference,
                      numerics_differences=differences, **measured)
