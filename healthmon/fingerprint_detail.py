"""What a fingerprint's page shows: its occurrences over time (the last 24 hours by
hour, the last hour by minute), its recent sample lines, its state and what may be
done to it."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from healthmon.fingerprint_states import IGNORE_DURATIONS, TRANSITIONS
from healthmon.models import Fingerprint, FingerprintStatus
from healthmon.overview import WINDOWS, trend_buckets

CHART_WIDTH, CHART_HEIGHT = 600, 80


class OccurrenceChart:
    """Bars of a window's buckets, scaled into an SVG viewBox."""

    def __init__(self, window: str, fingerprint: Fingerprint, now: datetime) -> None:
        self.window = WINDOWS[window]
        self.buckets = trend_buckets([fingerprint.pk], self.window, now)[fingerprint.pk]
        self.start = self.window.start(now)
        self.total = sum(self.buckets)
        self.peak = max(self.buckets, default=0)

    @property
    def bars(self) -> list[dict[str, object]]:
        top = self.peak or 1
        width = CHART_WIDTH / len(self.buckets)
        bars = []
        for index, value in enumerate(self.buckets):
            height = round(CHART_HEIGHT * value / top, 2)
            bars.append(
                {
                    "x": round(index * width, 2),
                    "y": round(CHART_HEIGHT - height, 2),
                    "width": round(max(width - 1, 0.5), 2),
                    "height": height,
                    "count": value,
                    "at": self.start + self.window.bucket * index,
                }
            )
        return bars


ALERTS_SHOWN = 20


def fingerprint_context(fingerprint: Fingerprint) -> dict[str, object]:
    now = timezone.now()
    allowed = TRANSITIONS.get(fingerprint.status, set())
    return {
        "fingerprint": fingerprint,
        "charts": [
            OccurrenceChart("24h", fingerprint, now),
            OccurrenceChart("1h", fingerprint, now),
        ],
        "chart_width": CHART_WIDTH,
        "chart_height": CHART_HEIGHT,
        "samples": list(fingerprint.samples.select_related("source").order_by("-at")),
        "alerts": list(fingerprint.alerts.select_related("rule")[:ALERTS_SHOWN]),
        "can_resolve": FingerprintStatus.RESOLVED in allowed,
        "can_unresolve": FingerprintStatus.UNRESOLVED in allowed,
        "can_ignore": FingerprintStatus.IGNORED in allowed,
        "ignore_durations": list(IGNORE_DURATIONS),
        "now": now,
    }
