"""A fingerprint's issue state, as Sentry has them: unresolved, resolved, regressed
(seen again after being resolved), ignored (for a time, or until N more occurrences).

`TRANSITIONS` says which moves exist; `move()` is the one function that makes a
staff member's move (a conditional UPDATE, so two people resolving at once make one
move, an audit event with the actor, a live event for the Health page). Ingest moves
a fingerprint too, inside the UPDATE that adds its counts to the locked row: it asks
`on_occurrence()` what an occurrence does to the status and `record_move()` audits it,
and its own live event already names the fingerprint.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from controlplane import audit, live
from controlplane.tiers import StaffUser
from healthmon.models import Fingerprint, FingerprintStatus

Status = FingerprintStatus
STATE_PERMISSION = "healthmon.change_fingerprint_state"

TRANSITIONS: dict[str, set[str]] = {
    Status.UNRESOLVED: {Status.RESOLVED, Status.IGNORED},
    # Resolved is seen again: regressed (ingest); or a person reopens or silences it.
    Status.RESOLVED: {Status.UNRESOLVED, Status.REGRESSED, Status.IGNORED},
    Status.REGRESSED: {Status.RESOLVED, Status.UNRESOLVED, Status.IGNORED},
    # The ignore ran out (ingest), or a person ends it.
    Status.IGNORED: {Status.UNRESOLVED, Status.RESOLVED},
}

# What a staff member may choose on the page and in the admin.
IGNORE_DURATIONS: dict[str, timedelta | None] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "forever": None,
}
MAX_IGNORE_MORE = 1_000_000_000


class StateRefused(Exception):
    """A move that does not exist, or no longer applies; nothing was changed."""


@dataclass(frozen=True)
class IgnoreFor:
    """How long an ignore lasts: a time (`duration`), a number of occurrences more
    (`more`), or neither: until a person changes it."""

    duration: timedelta | None = None
    more: int | None = None

    @classmethod
    def parse(cls, duration: str, more: str = "") -> IgnoreFor:
        """From a form's values; a clear StateRefused for anything else."""
        if more.strip():
            try:
                count = int(more)
            except ValueError:
                raise StateRefused(f"'{more[:20]}' is not a number of occurrences.") from None
            if not 1 <= count <= MAX_IGNORE_MORE:
                raise StateRefused("Ignore until 1 or more further occurrences.")
            return cls(more=count)
        if duration not in IGNORE_DURATIONS:
            choices = ", ".join(IGNORE_DURATIONS)
            raise StateRefused(f"Ignore for one of {choices}, or until N more occurrences.")
        return cls(duration=IGNORE_DURATIONS[duration])

    def describe(self) -> str:
        if self.more is not None:
            return f"until {self.more} more occurrences"
        if self.duration is None:
            return "until changed"
        hours = int(self.duration.total_seconds() // 3600)
        return f"for {hours // 24} days" if hours >= 48 else f"for {hours} hours"


def resolve(fingerprint: Fingerprint, *, actor: StaffUser | None = None) -> Fingerprint:
    return move(fingerprint, Status.RESOLVED, actor=actor)


def unresolve(fingerprint: Fingerprint, *, actor: StaffUser | None = None) -> Fingerprint:
    return move(fingerprint, Status.UNRESOLVED, actor=actor)


def ignore(
    fingerprint: Fingerprint, how: IgnoreFor, *, actor: StaffUser | None = None
) -> Fingerprint:
    return move(fingerprint, Status.IGNORED, actor=actor, ignore_for=how)


def move(
    fingerprint: Fingerprint,
    to: str,
    *,
    actor: StaffUser | None = None,
    ignore_for: IgnoreFor | None = None,
) -> Fingerprint:
    """Move `fingerprint` from the status it has to `to` if it still has it: audited
    and published. Refuses (writing nothing) a move TRANSITIONS does not have."""
    old = fingerprint.status
    if to not in TRANSITIONS.get(old, set()):
        raise StateRefused(f"This fingerprint is {old} and cannot become {to}.")
    now = timezone.now()
    fields: dict[str, Any] = {
        "status": to,
        "status_changed_at": now,
        "ignored_until": None,
        "ignored_until_count": None,
    }
    if to == Status.IGNORED:
        how = ignore_for or IgnoreFor()
        if how.duration is not None:
            fields["ignored_until"] = now + how.duration
        if how.more is not None:
            fields["ignored_until_count"] = fingerprint.count + how.more
    with transaction.atomic():
        rows = Fingerprint.objects.filter(pk=fingerprint.pk, status=old)
        if not rows.update(**fields):
            current = (
                Fingerprint.objects.filter(pk=fingerprint.pk)
                .values_list("status", flat=True)
                .first()
            )
            raise StateRefused(
                f"This fingerprint is no longer {old} (it is {current or 'deleted'} now); "
                "nothing was changed."
            )
        fingerprint.refresh_from_db()
        details = {"ignored": ignore_for.describe()} if to == Status.IGNORED and ignore_for else {}
        record_move(fingerprint, old, actor=actor, **details)
        from healthmon.ingest import HEALTH_GROUP

        live.publish(HEALTH_GROUP, "health.fingerprints", ids=[fingerprint.pk], new=[])
    return fingerprint


def on_occurrence(fingerprint: Fingerprint, total: int, now: datetime) -> dict[str, Any]:
    """The fields an occurrence changes on a stored fingerprint (`total`: its count
    with this batch): a resolved one regresses (and wants a task of its own again);
    an ignore whose time or count ran out ends. Empty when the status stays."""
    status = fingerprint.status
    if status == Status.RESOLVED and fingerprint.count:
        return {
            "status": Status.REGRESSED,
            "status_changed_at": now,
            "regressed_at": now,
            "task": None,
        }
    if status == Status.IGNORED and (
        (fingerprint.ignored_until is not None and now >= fingerprint.ignored_until)
        or (
            fingerprint.ignored_until_count is not None and total >= fingerprint.ignored_until_count
        )
    ):
        return {
            "status": Status.UNRESOLVED,
            "status_changed_at": now,
            "ignored_until": None,
            "ignored_until_count": None,
        }
    return {}


def record_move(
    fingerprint: Fingerprint, before: str, *, actor: StaffUser | None = None, **details: Any
) -> None:
    """The audit event of a move (actor None: the system, as ingest)."""
    audit.record(
        f"fingerprint.{fingerprint.status}",
        fingerprint,
        before={"status": before},
        after={"status": fingerprint.status, **details},
        actor=actor,
    )
