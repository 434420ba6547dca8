"""Self-heal's metrics on `/metrics` (see `controlplane.metrics`), read at scrape
time: the task queue by status and the workers by status (revoked ones left out),
one grouped query each. Every status is written, zero included."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Count
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from selfheal.models import Task, TaskStatus, Worker


def scrape() -> Iterable[Metric]:
    tasks = dict(Task.objects.order_by().values_list("status").annotate(n=Count("pk")))
    queue = GaugeMetricFamily("selfheal_tasks", "Tasks by status.", labels=["status"])
    for status in TaskStatus.values:
        queue.add_metric([status], tasks.get(status, 0))
    workers = dict(
        Worker.objects.filter(revoked_at__isnull=True)
        .order_by()
        .values_list("status")
        .annotate(n=Count("pk"))
    )
    fleet = GaugeMetricFamily(
        "selfheal_workers", "Workers by status (online, offline, draining).", labels=["status"]
    )
    for status in Worker.Status.values:
        fleet.add_metric([status], workers.get(status, 0))
    yield from (queue, fleet)
