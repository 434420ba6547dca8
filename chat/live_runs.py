"""Runs as the chat pages list them, kept live: a session page's Runs sidebar and the
chat index's "Running now" and last-run chips.

`announce_run()` is called where a run is created or changes status (`chat.runs`,
`chat.run_status`), inside that transaction; it publishes the run's id, session and
status once it commits, to the session's group and to the index's. The consumers
(`chat.consumers`) answer with the fragments the pages render: a run's chip from the
message alone; the sidebar (on a new run) and "Running now" from the database.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, QuerySet
from django.template.loader import render_to_string

from chat.models import Message, Run, RunStatus
from controlplane.live import publish

INDEX_GROUP = "chat.sessions"
RUNS_SHOWN = 20  # in a session's sidebar
RUNNING_SHOWN = 50  # in "Running now"
# Not stopped: queued, working, stopping or waiting for a person.
RUNNING_STATUSES = tuple(status for status in RunStatus.values if status != RunStatus.STOPPED)


def session_group(session_id: int) -> str:
    return f"chat.session.{session_id}"


def announce_run(
    run_id: int, session_id: int, status: str, stop_reason: str, *, created: bool = False
) -> None:
    """Tell the session's page and the index that run `run_id` is now `status`."""
    message: dict[str, Any] = {
        "run_id": run_id,
        "session_id": session_id,
        "status": str(status),
        "stop_reason": str(stop_reason),
        "created": created,
    }
    publish(session_group(session_id), "run.changed", **message)
    publish(INDEX_GROUP, "run.changed", **message)


# -- what the pages list ------------------------------------------------------------


def runs_with_message(runs: QuerySet[Run]) -> QuerySet[Run]:
    """Runs with who started them and their user message (`user_messages`), in one
    query each."""
    user_messages = Message.objects.filter(role=Message.Role.USER)
    return runs.select_related("started_by").prefetch_related(
        Prefetch("messages", queryset=user_messages, to_attr="user_messages")
    )


def running_now() -> list[Run]:
    """Every run not stopped, newest first, with its session: two queries."""
    runs = Run.objects.filter(status__in=RUNNING_STATUSES).select_related("session")
    return list(runs_with_message(runs).order_by("-created_at", "-id")[:RUNNING_SHOWN])


# -- the live fragments ------------------------------------------------------------


def chip_html(message: dict[str, Any]) -> str:
    """A run's status chip, swapped in wherever the page shows that run."""
    chip_run = {
        "pk": message["run_id"],
        "status": message["status"],
        "stop_reason": message["stop_reason"],
    }
    return render_to_string("chat/partials/run_chip.html", {"chip_run": chip_run, "oob": True})


def index_update_html(session_id: int) -> str:
    """What the index changes when a run of `session_id` changes: the session's
    last-run chip (its newest run's, which need not be the run that changed) and
    "Running now". Three queries."""
    last = (
        Run.objects.filter(session_id=session_id)
        .order_by("-created_at", "-id")
        .values("status", "stop_reason")
        .first()
    )
    chip = render_to_string(
        "chat/partials/session_last_run.html",
        {"session_id": session_id, **(last or {"status": "", "stop_reason": ""}), "oob": True},
    )
    return chip + running_now_html()


def sidebar_html(session_id: int) -> str:
    """A session's Runs sidebar, as the page renders it (after a run was created)."""
    runs = runs_with_message(Run.objects.filter(session_id=session_id))
    context = {"runs": list(runs.order_by("-created_at", "-id")[:RUNS_SHOWN]), "oob": True}
    return render_to_string("chat/partials/run_history.html", context)


def running_now_html() -> str:
    return render_to_string(
        "chat/partials/running_now.html", {"running": running_now(), "oob": True}
    )
