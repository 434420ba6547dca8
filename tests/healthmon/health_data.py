"""Fingerprints made the way production makes them: through `healthmon.ingest`."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from healthmon.ingest import LogRecord, ingest
from healthmon.levels import Level
from healthmon.models import Fingerprint, LogSource


def make_source(name: str = "shop-file", service: str = "shop", **fields: object) -> LogSource:
    fields.setdefault("kind", LogSource.Kind.FILE)
    return LogSource.objects.create(name=name, service=service, **fields)


def ingest_lines(
    source: LogSource,
    message: str,
    times: int = 1,
    *,
    level: int = Level.ERROR,
    at: datetime | None = None,
    service: str = "",
) -> Fingerprint:
    """Ingest `message` `times` times and return its fingerprint."""
    at = at or timezone.now()
    records = [
        LogRecord(message=message, at=at, level=level, service=service, attributes={"n": n})
        for n in range(times)
    ]
    result = ingest(source, records)
    assert result.accepted == times
    return (
        Fingerprint.objects.filter(service=service or source.service, samples__message=message)
        .distinct()
        .get()
    )
