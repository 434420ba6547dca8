"""The Engine page's task list and throughput: every task, filtered by status (or the
open ones, or the finished ones: the history), kind and worker, a page at a time; and
how many tasks finished per minute over the last hour and per hour over the last day.

A filter comes from the page's query string (a plain GET form, so it works without
JavaScript and a filtered view is a link to share); the page's websocket carries the
same query, so the live re-render shows the same filter and page. Every read here is
a fixed number of queries however many tasks there are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.core.paginator import Page, Paginator
from django.db.models import Count, QuerySet
from django.db.models.functions import TruncHour, TruncMinute
from django.utils import timezone

from selfheal.models import OPEN_STATUSES, Task, TaskStatus, Worker

PAGE_SIZE = 25
PAGE_PARAMETER = "p"
FINISHED_STATUSES = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)
STATUS_GROUPS: dict[str, tuple[str, ...]] = {"open": OPEN_STATUSES, "finished": FINISHED_STATUSES}
STATUS_CHOICES = [
    ("", "Any status"),
    ("open", "Open (pending to waiting)"),
    ("finished", "Finished (history)"),
    *TaskStatus.choices,
]
KIND_LIMIT = 200
WORKER_LIMIT = 200


class TaskFilter(forms.Form):
    status = forms.ChoiceField(choices=STATUS_CHOICES, required=False)
    kind = forms.CharField(max_length=100, required=False)
    worker = forms.CharField(max_length=100, required=False)

    def tasks(self) -> QuerySet[Task]:
        """The tasks the filter selects, newest activity first (the history: newest
        finish first). Call once the form is valid."""
        tasks = Task.objects.select_related("lease_worker")
        status = self.cleaned_data.get("status") or ""
        if status in STATUS_GROUPS:
            tasks = tasks.filter(status__in=STATUS_GROUPS[status])
        elif status:
            tasks = tasks.filter(status=status)
        if kind := self.cleaned_data.get("kind"):
            tasks = tasks.filter(kind=kind)
        if worker := self.cleaned_data.get("worker"):
            # A finished task keeps the worker that held it last.
            tasks = tasks.filter(lease_worker__name=worker)
        if status == "finished":
            return tasks.order_by("-finished_at", "-id")
        return tasks.order_by("-updated_at", "-id")

    def query(self, **changes: Any) -> str:
        """This filter's query string (with `changes`), for links and the websocket."""
        values = {name: self.data.get(name, "") for name in self.fields}
        values.update(changes)
        return urlencode({name: value for name, value in values.items() if value})


def task_list_context(query: Mapping[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """The list for `query` (the page's GET): the filter form, the page of tasks, and
    the kinds and workers to filter by. A bad filter is the form's error, not a 500."""
    form = TaskFilter(query)
    page: Page[Task] | None = None
    if form.is_valid():
        paginator = Paginator(form.tasks(), PAGE_SIZE)
        page = paginator.get_page(query.get(PAGE_PARAMETER))
    kinds = Task.objects.order_by("kind").values_list("kind", flat=True).distinct()
    workers = Worker.objects.order_by("name").values_list("name", flat=True)
    return {
        "task_filter": form,
        "task_page": page,
        "tasks": list(page.object_list) if page is not None else [],
        "filter_kinds": list(kinds[:KIND_LIMIT]),
        "filter_workers": list(workers[:WORKER_LIMIT]),
        "filter_query": form.query(),
        "page_parameter": PAGE_PARAMETER,
        "now": now or timezone.now(),
    }


# -- throughput -------------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    start: datetime
    completed: int
    failed: int

    @property
    def finished(self) -> int:
        return self.completed + self.failed


@dataclass(frozen=True)
class Throughput:
    """Tasks finished (completed, failed) per slot over a recent window."""

    label: str  # "last 60 minutes"
    unit: str  # "minute"
    slots: list[Slot]

    @property
    def completed(self) -> int:
        return sum(slot.completed for slot in self.slots)

    @property
    def failed(self) -> int:
        return sum(slot.failed for slot in self.slots)

    @property
    def per_slot(self) -> float:
        return self.completed / len(self.slots) if self.slots else 0.0

    @property
    def peak(self) -> int:
        return max((slot.finished for slot in self.slots), default=0)

    def bars(self, height: int = 60) -> list[dict[str, Any]]:
        """Each slot as SVG bars (attributes, not styles: the CSP allows no inline style)."""
        scale = height / self.peak if self.peak else 0.0
        bars = []
        for index, slot in enumerate(self.slots):
            done = round(slot.completed * scale, 1)
            failed = round(slot.failed * scale, 1)
            bars.append(
                {
                    "x": index,
                    "done_y": height - done,
                    "done_h": done,
                    "failed_y": height - done - failed,
                    "failed_h": failed,
                    "slot": slot,
                }
            )
        return bars


def throughput(
    now: datetime, window: timedelta, step: timedelta, unit: str, label: str
) -> Throughput:
    """One query: finished tasks in the window grouped by slot and status."""
    trunc = TruncMinute if step == timedelta(minutes=1) else TruncHour
    start = _floor(now, step) - window + step
    rows = (
        Task.objects.filter(
            finished_at__gte=start, status__in=[TaskStatus.COMPLETED, TaskStatus.FAILED]
        )
        .annotate(slot=trunc("finished_at", tzinfo=UTC))
        .values_list("slot", "status")
        .annotate(count=Count("id"))
        .order_by()
    )
    counts: dict[tuple[datetime, str], int] = {}
    for slot, status, count in rows:
        counts[(_floor(slot, step), status)] = counts.get((_floor(slot, step), status), 0) + count
    slots = []
    moment = start
    while moment <= now:
        slots.append(
            Slot(
                moment,
                counts.get((moment, TaskStatus.COMPLETED), 0),
                counts.get((moment, TaskStatus.FAILED), 0),
            )
        )
        moment += step
    return Throughput(label, unit, slots)


def _floor(moment: datetime, step: timedelta) -> datetime:
    moment = moment.astimezone(UTC)  # slots are UTC whatever TIME_ZONE is
    moment = moment.replace(second=0, microsecond=0)
    return moment.replace(minute=0) if step >= timedelta(hours=1) else moment


def throughput_context(now: datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    return {
        "throughputs": [
            throughput(now, timedelta(hours=1), timedelta(minutes=1), "minute", "last 60 minutes"),
            throughput(now, timedelta(hours=24), timedelta(hours=1), "hour", "last 24 hours"),
        ]
    }
