"""What an alert says: a subject a person can act on from a phone's lock screen, a
body with the numbers behind it, and a link to the Health page."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from urllib.parse import urlencode

from django.conf import settings

from healthmon.models import Alert, AlertRule

# Episodes named in a summary; the rest are counted and linked.
SUMMARY_TOP = 5


class Event(enum.StrEnum):
    OPENED = "opened"
    CLEARED = "cleared"


def health_url(service: str = "") -> str:
    query = f"?{urlencode({'service': service})}" if service else ""
    return f"{settings.SITE_URL.rstrip('/')}/health/{query}"


def fingerprint_url(fingerprint_id: int) -> str:
    return f"{settings.SITE_URL.rstrip('/')}/health/fingerprints/{fingerprint_id}/"


def link(alert: Alert) -> str:
    if alert.fingerprint_id is not None:
        return fingerprint_url(alert.fingerprint_id)
    return health_url(alert.service)


def single(alert: Alert, event: Event) -> tuple[str, str]:
    if event == Event.OPENED:
        subject = f"[{alert.service}] {alert.summary}"
        facts = [f"{name.replace('_', ' ')}: {value}" for name, value in _facts(alert)]
        body = "\n".join([*facts, f"Rule: {alert.rule.name}", link(alert)])
        return subject, body
    subject = f"[{alert.service}] Cleared: {alert.summary}"
    lasted = (alert.cleared_at - alert.opened_at) if alert.cleared_at else None
    lines = [
        f"Why: {alert.cleared_reason}" if alert.cleared_reason else "",
        f"Open for {_duration(lasted.total_seconds())}" if lasted is not None else "",
        f"Rule: {alert.rule.name}",
        link(alert),
    ]
    return subject, "\n".join(line for line in lines if line)


def summary(rule: AlertRule, alerts: Sequence[Alert], event: Event) -> tuple[str, str]:
    """One message for many episodes of one rule (an alert storm)."""
    kind = rule.get_kind_display()
    services = sorted({alert.service for alert in alerts})
    where = services[0] if len(services) == 1 else f"{len(services)} services"
    if event == Event.OPENED:
        subject = f"{len(alerts)} alerts: {kind} ({where})"
    else:
        subject = f"{len(alerts)} alerts cleared: {kind} ({where})"
    top = sorted(alerts, key=lambda alert: (-int(alert.details.get("weight", 0)), alert.pk))
    lines = [f"- [{alert.service}] {alert.summary} {link(alert)}" for alert in top[:SUMMARY_TOP]]
    if len(alerts) > SUMMARY_TOP:
        lines.append(f"and {len(alerts) - SUMMARY_TOP} more.")
    lines += [f"Rule: {rule.name}", health_url(services[0] if len(services) == 1 else "")]
    return subject, "\n".join(lines)


def _facts(alert: Alert) -> list[tuple[str, object]]:
    return [
        (name, value)
        for name, value in alert.details.items()
        if name != "weight" and value not in (None, "")
    ]


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"
