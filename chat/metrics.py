"""Chat's metrics on `/metrics` (see `controlplane.metrics`), read at scrape time:
runs by status, and stopped runs by stop reason, from one grouped query. Every
status and reason is written, zero included, so a series does not vanish."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from django.db.models import Count
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from chat.models import Run, RunStatus, StopReason


def scrape() -> Iterable[Metric]:
    by_status: Counter[str] = Counter()
    by_reason: Counter[str] = Counter()
    rows = Run.objects.order_by().values_list("status", "stop_reason").annotate(n=Count("pk"))
    for status, reason, count in rows:
        by_status[status] += count
        if status == RunStatus.STOPPED:
            by_reason[reason] += count
    runs = GaugeMetricFamily("chat_runs", "Agent runs by status.", labels=["status"])
    for status in RunStatus.values:
        runs.add_metric([status], by_status[status])
    stopped = GaugeMetricFamily(
        "chat_runs_stopped", "Stopped agent runs by stop reason.", labels=["stop_reason"]
    )
    for reason in StopReason.values:
        stopped.add_metric([reason], by_reason[reason])
    yield from (runs, stopped)
