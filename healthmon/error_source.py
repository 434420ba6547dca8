"""Healthmon as an error source of selfheal's diagnosis (`selfheal.error_patterns`):
the error fingerprints seen in the last 24 hours, most frequent first, with their
count over that window. Registered from `HealthmonConfig.ready()`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from django.db.models import Sum
from django.utils import timezone

from healthmon.fix_tasks import pattern_of
from healthmon.levels import level_setting
from healthmon.models import Fingerprint, HourCount, MinuteCount

WINDOW = timedelta(hours=24)


def recent_error_patterns(limit: int = 10) -> Iterable[Mapping[str, Any]]:
    since = timezone.now() - WINDOW
    counts: dict[int, int] = {}
    for model, field in ((MinuteCount, "minute"), (HourCount, "hour")):
        rows = (
            model.objects.filter(
                **{f"{field}__gte": since},
                fingerprint__level__gte=level_setting("HEALTHMON_TASK_MIN_LEVEL"),
            )
            .exclude(fingerprint__status=Fingerprint.Status.IGNORED)
            .values("fingerprint")
            .annotate(total=Sum("count"))
        )
        for row in rows:
            counts[row["fingerprint"]] = counts.get(row["fingerprint"], 0) + row["total"]
    top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]
    rows_by_id = Fingerprint.objects.in_bulk([pk for pk, _ in top])
    return [pattern_of(rows_by_id[pk], count) for pk, count in top if pk in rows_by_id]
