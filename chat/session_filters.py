"""The chat index's sessions: each with its run count and last run, filtered by the
last run's status, the session's mode and owner, and searched by words in its title
or in any of its messages."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery

from chat.live_runs import RUNNING_STATUSES
from chat.models import ChatSession, Message, Run, RunStatus
from controlplane.tiers import StaffUser


def sessions_with_last_run() -> QuerySet[ChatSession]:
    latest = Run.objects.filter(session=OuterRef("pk")).order_by("-created_at", "-id")
    return (
        ChatSession.objects.select_related("user")
        .annotate(
            run_count=Count("runs"),
            last_status=Subquery(latest.values("status")[:1]),
            last_stop_reason=Subquery(latest.values("stop_reason")[:1]),
        )
        .order_by("-updated_at", "-id")
    )


def filtered_sessions(wanted: dict[str, Any], user: StaffUser) -> QuerySet[ChatSession]:
    """`wanted`: a valid `SessionFilterForm`'s cleaned data."""
    sessions = sessions_with_last_run()
    # Q objects: the last run's status is an annotation the type checker cannot see.
    status = wanted.get("status") or ""
    if status == "running":
        running = [s for s in RUNNING_STATUSES if s != RunStatus.WAITING_APPROVAL]
        sessions = sessions.filter(Q(last_status__in=running))
    elif status == "never":
        sessions = sessions.filter(Q(last_status__isnull=True))
    elif status:
        sessions = sessions.filter(Q(last_status=status))
    if wanted.get("mode"):
        sessions = sessions.filter(mode=wanted["mode"])
    if wanted.get("owner") == "me":
        sessions = sessions.filter(user=user)
    words = (wanted.get("q") or "").strip()
    if words:
        said = Message.objects.filter(session=OuterRef("pk"), content__icontains=words)
        sessions = sessions.filter(Q(title__icontains=words) | Exists(said))
    return sessions
