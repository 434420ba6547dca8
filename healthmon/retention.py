"""Storage that stays small: the periodic sweep that rolls per-minute counts up to
hours and drops what its retention setting says is too old.

- `MinuteCount` older than `HEALTHMON_MINUTE_COUNTS_DAYS` (from the hour it falls in)
  is added into `HourCount` and deleted, a batch per transaction: the rows a batch
  sums are the rows it deletes, locked while it does (a concurrent sweep skips them
  on PostgreSQL; SQLite lets one writer in at a time), so running twice, or two at
  once, counts each minute once.
- `HourCount` older than `HEALTHMON_HOURLY_COUNTS_DAYS` is deleted.
- `ServiceMinute` older than the minute retention is deleted: the sustained-5xx rule
  reads only its last few minutes, so there is nothing to roll up.
- A `Fingerprint` not seen for `HEALTHMON_FINGERPRINT_DAYS` is deleted with its
  counts, samples and alert history, unless its task is still open: the engine is
  working on it, and the task's page links it. It goes once the task is done.
- An `Alert` cleared more than `HEALTHMON_ALERT_DAYS` ago is deleted (open ones stay).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from healthmon.batch_writes import upsert_adding
from healthmon.models import Alert, Fingerprint, HourCount, MinuteCount, ServiceMinute
from selfheal.models import OPEN_STATUSES

BATCH = 2000


@dataclass
class Sweep:
    minutes_rolled_up: int = 0
    hours_deleted: int = 0
    service_minutes_deleted: int = 0
    fingerprints_deleted: int = 0
    alerts_deleted: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def sweep(now: datetime | None = None) -> Sweep:
    now = now or timezone.now()
    minute_cutoff = hour_of(now - timedelta(days=settings.HEALTHMON_MINUTE_COUNTS_DAYS))
    result = Sweep(minutes_rolled_up=roll_up_minutes(minute_cutoff))
    result.hours_deleted, _ = HourCount.objects.filter(
        hour__lt=now - timedelta(days=settings.HEALTHMON_HOURLY_COUNTS_DAYS)
    ).delete()
    result.service_minutes_deleted, _ = ServiceMinute.objects.filter(
        minute__lt=minute_cutoff
    ).delete()
    result.fingerprints_deleted = delete_stale_fingerprints(
        now - timedelta(days=settings.HEALTHMON_FINGERPRINT_DAYS)
    )
    result.alerts_deleted, _ = Alert.objects.filter(
        cleared_at__lt=now - timedelta(days=settings.HEALTHMON_ALERT_DAYS)
    ).delete()
    return result


def roll_up_minutes(before: datetime) -> int:
    """Add every per-minute count before `before` into its hour, and delete it."""
    rolled = 0
    while True:
        with transaction.atomic():
            batch = list(
                MinuteCount.objects.select_for_update(skip_locked=True)
                .filter(minute__lt=before)
                .order_by("id")
                .values_list("id", "fingerprint_id", "minute", "count")[:BATCH]
            )
            if not batch:
                return rolled
            hours: Counter[tuple[int, datetime]] = Counter()
            for _, fingerprint_id, minute, count in batch:
                hours[(fingerprint_id, hour_of(minute))] += count
            upsert_adding(
                HourCount,
                ("fingerprint_id", "hour"),
                [(fp, hour, count) for (fp, hour), count in hours.items()],
                ("count",),
            )
            MinuteCount.objects.filter(pk__in=[row[0] for row in batch]).delete()
            rolled += len(batch)


def delete_stale_fingerprints(last_seen_before: datetime) -> int:
    deleted = 0
    stale = Fingerprint.objects.filter(last_seen__lt=last_seen_before).exclude(
        task__status__in=OPEN_STATUSES
    )
    while ids := list(stale.order_by("id").values_list("id", flat=True)[:BATCH]):
        with transaction.atomic():
            # Seen again since the query: ingest moved last_seen, keep it.
            _, by_model = Fingerprint.objects.filter(
                pk__in=ids, last_seen__lt=last_seen_before
            ).delete()
        deleted += by_model.get(Fingerprint._meta.label, 0)
    return deleted
