"""A finding: what one diagnosis check saw, how bad it is, and what to do about it.

Whether a finding needs a person is a field the check sets (`needs_person`), stored
with the finding in `PlaybookExecution.findings`: the check knows whether its
suggestion is something a playbook carries out (repair resets tasks, opens fix
tasks) or something only a person can do (start a worker, free disk space).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

OK, WARNING, CRITICAL = "ok", "warning", "critical"
SEVERITY_RANK = {OK: 0, WARNING: 1, CRITICAL: 2}
NOTHING_TO_DO = "None needed."


@dataclass(frozen=True)
class Finding:
    check: str
    severity: str
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    suggested_action: str = NOTHING_TO_DO
    # True when the suggested action is one no playbook takes: a person must act.
    needs_person: bool = False

    def as_record(self) -> dict[str, Any]:
        return asdict(self)


def worst(*severities: str) -> str:
    return max(severities, key=lambda s: SEVERITY_RANK[s], default=OK)


def worst_severity(findings: Iterable[dict[str, Any]]) -> str:
    rank = max((SEVERITY_RANK.get(f.get("severity", OK), 0) for f in findings), default=0)
    return next(name for name, value in SEVERITY_RANK.items() if value == rank)


def needs_a_person(record: dict[str, Any]) -> bool:
    """A stored finding that is not ok and that its check marked as a person's to act on."""
    return record.get("severity", OK) != OK and bool(record.get("needs_person", False))
