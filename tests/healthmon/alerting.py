"""What the alert tests share: a log source, a rule of one kind (the only one), the
messages the notification channels were asked to send, and a clock to drive."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from controlplane.models import NotificationChannel, NotificationDelivery
from healthmon.ingest import LogRecord, ingest
from healthmon.levels import Level
from healthmon.models import AlertRule, LogSource


def this_minute() -> datetime:
    return timezone.now().replace(second=0, microsecond=0)


def make_source(service: str = "api") -> LogSource:
    return LogSource.objects.create(name=service, service=service, kind=LogSource.Kind.FILE)


def make_channel(name: str = "ops", target: str = "https://hooks.example.invalid/ops") -> Any:
    return NotificationChannel.objects.create(
        name=name, kind=NotificationChannel.Kind.WEBHOOK, target=target
    )


def only_rule(kind: str, **parameters: Any) -> AlertRule:
    """The one enabled rule: the defaults the migration made are switched off, so a
    test counts the messages of the kind it is about."""
    AlertRule.objects.all().delete()
    return AlertRule.objects.create(name=f"test {kind}", kind=kind, **parameters)


def messages() -> list[NotificationDelivery]:
    return list(
        NotificationDelivery.objects.filter(dedupe_key__startswith="healthmon.alert").order_by("id")
    )


def subjects() -> list[str]:
    return [delivery.subject for delivery in messages()]


def log(source: LogSource, message: str, at: datetime | None = None, **fields: Any) -> None:
    fields.setdefault("level", Level.ERROR)
    result = ingest(source, [LogRecord(message, at=at, **fields)])
    assert result.accepted == 1


def minutes(n: int) -> timedelta:
    return timedelta(minutes=n)
