"""The demo service of the embedded default's demo data set (`bootstrap --demo`):
`demo-shop`, a file source labelled demo, fed with real log lines of three systems
(LogHub samples shipped in `healthmon/demo/`) stamped over the last few hours, so a
newcomer's Health page shows real groups, and the error patterns among them open
tasks the way any new pattern does (ingest, after the commit).

Safe to run again: the lines are ingested only while the demo source has no data.

The demo also registers this product's own checkout (`BASE_DIR`, when it is a git
repository) as the local repository `control-plane`, so the first code scan is of
real code. Also safe to run again: a repository of that name, or of that path, is
left as it is.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from healthmon.ingest import LogRecord, ingest
from healthmon.levels import parse_level
from healthmon.models import Fingerprint, LogSource, Repository

DEMO_SOURCE = "demo-shop-logs"
DEMO_SERVICE = "demo-shop"
DEMO_LINES = Path(__file__).with_name("demo") / "loghub-sample.jsonl"
# The lines are spread over this much of the recent past, the last a minute ago, so
# both the 24-hour and the 1-hour views have something to show.
SPREAD = timedelta(hours=6)
DEMO_REPOSITORY = "control-plane"


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


def register_own_checkout() -> str:
    base = Path(settings.BASE_DIR)
    if not (base / ".git").exists():  # a directory, or a file in a git worktree
        return f"Demo repository: not registered ({base} is not a git checkout)."
    existing = Repository.objects.filter(name=DEMO_REPOSITORY).first() or (
        Repository.objects.filter(kind=Repository.Kind.LOCAL, path=str(base)).first()
    )
    if existing is not None:
        return f"Demo repository {existing.name} is registered already."
    Repository.objects.create(name=DEMO_REPOSITORY, kind=Repository.Kind.LOCAL, path=str(base))
    return (
        f"Demo repository: {DEMO_REPOSITORY} ({base}), scanned on the schedule or now "
        f"with: bin/manage scan_code --repo {DEMO_REPOSITORY}"
    )
