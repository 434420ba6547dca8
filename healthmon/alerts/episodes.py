"""The life of an alert episode: opened once, cleared once, each told once.

An episode has one transition (open -> cleared), made here and nowhere else:
`open_episodes` inserts them and `clear_episodes` moves them. Both are safe when two
evaluations run at once: the partial unique constraints let one open episode exist
per rule and subject (an insert that meets one is skipped), and clearing is a
conditional UPDATE. Each run tells only the episodes its own statement wrote, found
again by the batch key it wrote them with, so two runs never tell the same one.

What it is told with: one message per episode, or, when one run opens (or clears)
more than `HEALTHMON_ALERT_STORM_SIZE` of one rule, one summary of them all. The
message's dedupe key is kept on the episode (`opened_notice`, `cleared_notice`), so
`Alert.deliveries()` finds what it sent.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction

from controlplane import live
from controlplane.models import NotificationChannel
from controlplane.notifications import notify
from healthmon.alerts import messages
from healthmon.alerts.messages import Event
from healthmon.ingest import HEALTH_GROUP
from healthmon.models import Alert, AlertRule, Fingerprint


@dataclass(frozen=True)
class Finding:
    """A condition a rule sees now: what an episode is opened with."""

    service: str
    since: datetime
    summary: str
    fingerprint: Fingerprint | None = None
    details: dict[str, Any] = field(default_factory=dict)
    # Orders a summary's top few (occurrences in the window, for instance).
    weight: int = 0


def open_episodes(rule: AlertRule, findings: Sequence[Finding], now: datetime) -> list[Alert]:
    """Open an episode for each finding that has none open, and tell them."""
    if not findings:
        return []
    batch = _batch_key(Event.OPENED)
    with transaction.atomic():
        Alert.objects.bulk_create(
            [
                Alert(
                    rule=rule,
                    kind=rule.kind,
                    fingerprint=finding.fingerprint,
                    service=finding.service,
                    since=finding.since,
                    opened_at=now,
                    summary=finding.summary[:300],
                    details={**finding.details, "weight": finding.weight},
                    opened_notice=batch,
                )
                for finding in findings
            ],
            # The open episode another run (or an earlier one) holds wins.
            ignore_conflicts=True,
        )
        # opened_at and (rule, cleared_at) are indexed; the batch key tells ours apart.
        opened = list(
            Alert.objects.filter(opened_at=now, opened_notice=batch).select_related(
                "fingerprint", "rule"
            )
        )
        _tell(rule, opened, Event.OPENED, batch)
        _publish(opened)
    return opened


def clear_episodes(rule: AlertRule, endings: Mapping[int, str], now: datetime) -> list[Alert]:
    """Clear the open episodes named in `endings` (id -> why it ended), and tell them."""
    if not endings:
        return []
    batch = _batch_key(Event.CLEARED)
    by_reason: dict[str, list[int]] = defaultdict(list)
    for alert_id, reason in endings.items():
        by_reason[reason[:200]].append(alert_id)
    with transaction.atomic():
        for reason, ids in by_reason.items():
            Alert.objects.filter(pk__in=ids, rule=rule, cleared_at__isnull=True).update(
                cleared_at=now, cleared_reason=reason, cleared_notice=batch
            )
        cleared = list(
            Alert.objects.filter(rule=rule, cleared_at=now, cleared_notice=batch).select_related(
                "fingerprint", "rule"
            )
        )
        _tell(rule, cleared, Event.CLEARED, batch)
        _publish(cleared)
    return cleared


def _batch_key(event: Event) -> str:
    return f"healthmon.alerts.{event}.{uuid.uuid4().hex}"


def _tell(rule: AlertRule, alerts: list[Alert], event: Event, batch: str) -> None:
    if not alerts:
        return
    channels = _channels(rule)
    if channels == []:
        return  # it sends to chosen channels only, and every one of them is disabled
    if len(alerts) > settings.HEALTHMON_ALERT_STORM_SIZE:
        subject, body = messages.summary(rule, alerts, event)
        notify(subject, body, dedupe_key=batch, channels=channels)
        return
    notice_field = "opened_notice" if event == Event.OPENED else "cleared_notice"
    for alert in alerts:
        key = f"healthmon.alert.{alert.pk}.{event}"
        Alert.objects.filter(pk=alert.pk).update(**{notice_field: key})
        setattr(alert, notice_field, key)
        subject, body = messages.single(alert, event)
        notify(subject, body, dedupe_key=key, channels=channels)


def _publish(alerts: list[Alert]) -> None:
    """The Health page re-renders the fingerprints whose alert state moved (the event
    ingest sends when their counts move)."""
    ids = sorted({alert.fingerprint_id for alert in alerts if alert.fingerprint_id is not None})
    if ids:
        live.publish(HEALTH_GROUP, "health.fingerprints", ids=ids, new=[])


def _channels(rule: AlertRule) -> list[NotificationChannel] | None:
    """The channels a rule's messages go to: its chosen ones that are enabled, or
    every enabled channel (None, as `notify` reads it) when it chose none."""
    chosen = list(rule.channels.all())
    if not chosen:
        return None
    return [channel for channel in chosen if channel.enabled]
