"""Home's agent runs card: the runs not stopped yet, live (status, step, cost), and the
last that stopped, with their stop reason. Chat announces a change of either on Home's
group when a run's status or budget event is written (`chat.events.emit_many`)."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Window

from chat.kill_switches import kill_switch_off
from chat.models import Run, RunStatus
from controlplane.home.cards import for_everyone, register_home_card
from controlplane.home.changes import register_object_pages

ACTIVE_LIMIT = 10
STOPPED_LIMIT = 5


def active_runs() -> tuple[list[Run], int]:
    """The newest runs not stopped, and how many there are, read together (a count
    over the whole set beside each row) so the two never disagree."""
    runs: list[Any] = list(
        Run.objects.exclude(status=RunStatus.STOPPED)
        .select_related("started_by")
        .annotate(active_count=Window(Count("pk")))[:ACTIVE_LIMIT]
    )
    return runs, runs[0].active_count if runs else 0


def runs_context() -> dict[str, Any]:
    """Queued, working, paused and stopping runs (newest first), and the last stopped
    ones with their stop reason: two queries. A run that stopped between the two
    reads shows where the first saw it, once (its row's id is the page's); its move's
    own announcement brings the next render."""
    runs, count = active_runs()
    stopped = (
        Run.objects.filter(status=RunStatus.STOPPED)
        .exclude(pk__in=[run.pk for run in runs])
        .select_related("started_by")
        .order_by("-finished_at", "-id")[:STOPPED_LIMIT]
    )
    return {
        "active_runs": runs,
        "active_run_count": count,
        "stopped_runs": list(stopped),
        # Why nothing runs, when that is why: a kill switch that refuses new runs.
        "runs_switched_off": kill_switch_off(),
    }


def run_pages(object_ids: list[str]) -> dict[str, str]:
    """Each run's page (its chat's), for Home's recent changes: one query."""
    runs = Run.objects.filter(pk__in=[i for i in object_ids if i.isdigit()]).only(
        "pk", "session_id"
    )
    return {str(run.pk): run.get_absolute_url() for run in runs}


def register() -> None:
    """Called once from the app's ready()."""
    register_home_card(
        "runs",
        "chat/partials/home_runs.html",
        for_everyone(runs_context),
        order=40,
        events=("home.runs", "home.audit"),  # a kill switch turned is audited
    )
    register_object_pages("chat", "run", run_pages)
