"""The demo service of the embedded default's demo data set (`bootstrap --demo`):
`demo-shop`, a file source labelled demo, fed with real log lines of three systems
(LogHub samples shipped in `healthmon/demo/`) stamped over the last few hours, so a
newcomer's Health page shows real groups, and the error patterns among them open
tasks the way any new pattern does (ingest, after the commit).

Safe to run again: the lines are ingested only while the demo source has no data.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

from django.utils import timezone

from healthmon.ingest import LogRecord, ingest
from healthmon.levels import parse_level
from healthmon.models import Fingerprint, LogSource

DEMO_SOURCE = "demo-shop-logs"
DEMO_SERVICE = "demo-shop"
DEMO_LINES = Path(__file__).with_name("demo") / "loghub-sample.jsonl"
# The lines are spread over this much of the recent past, the last a minute ago, so
# both the 24-hour and the 1-hour views have something to show.
SPREAD = timedelta(hours=6)


def load_demo_logs() -> str:
    source, _ = LogSource.objects.get_or_create(
        name=DEMO_SOURCE,
        defaults={
            "service": DEMO_SERVICE,
            "kind": LogSource.Kind.FILE,
            "is_demo": True,
            "settings": {"file": "healthmon/demo/loghub-sample.jsonl"},
        },
    )
    if source.last_ingest_at or Fingerprint.objects.filter(service=source.service).exists():
        return f"Demo logs of {source.service} are loaded already."
    result = ingest(source, demo_records(timezone.now()))
    groups = Fingerprint.objects.filter(service=source.service).count()
    return f"Demo logs: {result.accepted} lines of {source.service} in {groups} groups."


def demo_records(now: datetime) -> list[LogRecord]:
    lines = [json.loads(line) for line in DEMO_LINES.read_text("utf-8").splitlines() if line]
    first = now - timedelta(minutes=1) - SPREAD
    step = SPREAD / max(len(lines) - 1, 1)
    return [
        LogRecord(
            message=line["message"],
            at=first + step * index,
            level=parse_level(line["level"]),
            attributes={"system": line["system"], "demo": True},
        )
        for index, line in enumerate(lines)
    ]
