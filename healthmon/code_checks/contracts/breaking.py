"""Breaking changes between a contract's shape at the last scan and now.

A breaking change is an event, but a person must see it: it is reported from the
scan that saw it on, in every scan, until the contract is restored (the path, field
or enum value is back, the type is the old one again, the field is optional again:
the finding is then fixed) or a person marks the finding intended (the check then
forgets it). So the check keeps the changes still pending in its state, each with
what would restore it; a later change of the same fact is not reported again while
one is pending (the pending one still names the shape people relied on).

Kinds (rules) and severity:
- `removed-operation`, `removed-response`, `removed-request-body`, `removed-schema`,
  `removed-field`, `removed-parameter`:
  high when what was removed is emitted (a response, a component responses use),
  medium when only the producer read it (a request field);
- `changed-type`: high;
- `new-required`: high, for a request field or parameter (or a component requests
  use) that became required or was added required;
- `removed-enum-value`: medium.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from healthmon.code_checks import Reported, identity_of
from healthmon.code_checks.contracts.documents import Shape
from healthmon.models import Finding

HIGH, MEDIUM = int(Finding.Severity.HIGH), int(Finding.Severity.MEDIUM)
KIND_RULES = {
    "operation": "removed-operation",
    "response": "removed-response",
    "request": "removed-request-body",
    "schema": "removed-schema",
}


@dataclass(frozen=True)
class Change:
    rule: str
    key: str
    severity: int
    message: str
    detail: str  # what tells this change from another of the same fact
    before: dict[str, Any] | None  # the fact as it was (None: it did not exist)

    def pending(self, file: str, check: str) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "key": self.key,
            "severity": self.severity,
            "message": self.message,
            "detail": self.detail,
            "before": self.before,
            "file": file,
            "identity": identity_of(check, self.rule, file, [f"{self.key} {self.detail}"], 1, 1),
        }


def changes(before: dict[str, dict[str, Any]], now: Shape) -> list[Change]:
    """What `now` breaks of `before` (both a document's facts)."""
    found: list[Change] = []
    for key, old in before.items():
        new = now.facts.get(key)
        if new is None:
            parent = old.get("parent")
            if parent and parent in before and parent not in now.facts:
                continue  # its parent's removal is the change people need to see
            found.append(_removed(key, old))
            continue
        if old.get("type") != new.get("type") and "any" not in (old.get("type"), new.get("type")):
            found.append(
                Change(
                    "changed-type",
                    key,
                    HIGH,
                    f"{key} changed type from {old.get('type')} to {new.get('type')}.",
                    f"{old.get('type')} -> {new.get('type')}",
                    old,
                )
            )
        if new.get("required") and not old.get("required") and _read_by_producer(new):
            found.append(_new_required(key, old))
        for value in old.get("enum") or ():
            if new.get("enum") is not None and value not in new["enum"]:
                found.append(
                    Change(
                        "removed-enum-value",
                        key,
                        MEDIUM,
                        f"{key} no longer allows the value {value}.",
                        value,
                        old,
                    )
                )
    for key, new in now.facts.items():
        parent = new.get("parent")
        if key in before or not parent or parent not in before:
            continue
        if new.get("required") and _read_by_producer(new) and new.get("kind") in (None, "request"):
            found.append(_new_required(key, None))
    return found


def _removed(key: str, old: dict[str, Any]) -> Change:
    kind = str(old.get("kind") or "")
    rule = KIND_RULES.get(kind, "removed-parameter" if " parameter " in key else "removed-field")
    emitted = kind == "operation" or old.get("dir") in ("out", "both")
    return Change(rule, key, HIGH if emitted else MEDIUM, f"{key} was removed.", "", old)


def _new_required(key: str, old: dict[str, Any] | None) -> Change:
    how = "became required" if old is not None else "was added as required"
    return Change("new-required", key, HIGH, f"{key} {how}.", "", old)


def _read_by_producer(fact: dict[str, Any]) -> bool:
    return fact.get("dir") in ("in", "both")


def restored(pending: dict[str, Any], now: Shape) -> bool:
    """True when the contract is back to what the pending change took away."""
    fact, before = now.facts.get(pending["key"]), pending.get("before") or {}
    rule = pending["rule"]
    if rule.startswith("removed-") and rule != "removed-enum-value":
        return fact is not None
    if fact is None:
        return rule == "new-required"  # the field is gone: nobody has to send it
    if rule == "changed-type":
        return fact.get("type") == before.get("type")
    if rule == "new-required":
        return not fact.get("required")
    return fact.get("enum") is None or pending["detail"] in fact["enum"]


def as_reported(
    pending: dict[str, Any], now: Shape, before: dict[str, Any], check: str
) -> Reported:
    return Reported(
        check=check,
        rule=pending["rule"],
        severity=pending["severity"],
        message="Breaking change: " + pending["message"],
        file=pending["file"],
        line=now.line_near(pending["key"], before),
        identity=pending["identity"],
    )
