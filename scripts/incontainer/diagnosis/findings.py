"""Findings: one problem (or warning) with its cause, its fix, the stage that found it, and the
nodes it concerns; per-node findings are grouped by cause, op type and device, with counts."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, List, Sequence, Tuple

from ..contract import SEVERITY_ERROR, SEVERITY_WARNING, STAGE_STATIC, most_fundamental

ERROR = SEVERITY_ERROR
WARNING = SEVERITY_WARNING
SHOWN_NODES = 3


@dataclass(frozen=True)
class Finding:
    code: str
    cause: str
    fix: str
    severity: str = ERROR
    stage: str = STAGE_STATIC
    op: str = ""
    nodes: Tuple[str, ...] = ()
    detail: str = ""  # the runtime's own words, quoted, for import and run findings
    confirmed: str = ""  # the later stage that confirmed (or refuted) a static finding

    @property
    def node(self) -> str:
        return self.nodes[0] if self.nodes else ""

    @property
    def count(self) -> int:
        return max(1, len(self.nodes))

    def to_json(self) -> dict:
        return {"code": self.code, "cause": self.cause, "fix": self.fix, "severity": self.severity,
                "stage": self.stage, "op": self.op, "node": self.node, "nodes": list(self.nodes),
                "count": self.count, "detail": self.detail, "confirmed": self.confirmed}

    def downgraded(self, why: str) -> "Finding":
        return replace(self, severity=WARNING, confirmed=why)

    def upgraded(self, why: str) -> "Finding":
        return replace(self, severity=ERROR, confirmed=why)


def group(findings: Sequence[Finding]) -> List[Finding]:
    """Identical findings on many nodes become one, listing the nodes (the order of first appearance)."""
    grouped: Dict[tuple, Finding] = {}
    for finding in findings:
        key = (finding.code, finding.severity, finding.stage, finding.op, finding.cause, finding.fix, finding.detail,
               finding.confirmed)
        if key in grouped:
            grouped[key] = replace(grouped[key], nodes=grouped[key].nodes + finding.nodes)
        else:
            grouped[key] = finding
    return list(grouped.values())


def blocking(findings: Sequence[Finding]) -> List[Finding]:
    return [finding for finding in findings if finding.severity == ERROR]


def outcome_of(findings: Sequence[Finding]):
    """The outcome a set of findings is named after: the most fundamental blocking code."""
    return most_fundamental(finding.code for finding in blocking(findings))


def summarize(findings: Sequence[Finding], limit: int = 3) -> str:
    parts = [f"{f.code}{where(f)}: {f.cause}; fix: {f.fix}" for f in findings[:limit]]
    more = f" ... and {len(findings) - limit} more" if len(findings) > limit else ""
    return " | ".join(parts) + more


def where(finding: Finding) -> str:
    if not finding.nodes:
        return f" ({finding.op})" if finding.op else ""
    shown = ", ".join(finding.nodes[:SHOWN_NODES])
    more = f" and {len(finding.nodes) - SHOWN_NODES} more" if len(finding.nodes) > SHOWN_NODES else ""
    op = f"{finding.op} " if finding.op else ""
    return f" at {op}x{finding.count}: {shown}{more}" if finding.count > 1 else f" at {shown} ({finding.op or '-'})"
