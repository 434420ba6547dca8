"""The Self-heal and Engine pages' websocket: re-rendered fragments, never JSON.

A page says which it is (`?page=index` or `?page=engine`); each connection renders
only that page's fragments, with the same templates as the full page and as its
user (the buttons depend on the tier). A burst of events (a repair resetting fifty
tasks, a thousand claims) is coalesced: a connection renders at most once every
`RENDER_INTERVAL` seconds, covering every event that arrived meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.auth.context_processors import PermWrapper
from django.http import QueryDict
from django.template.loader import render_to_string

from controlplane.consumers import PacedRenderConsumer
from controlplane.tiers import StaffUser
from selfheal import dashboard, task_list
from selfheal.engine import ENGINE_GROUP

INDEX, ENGINE = "index", "engine"
# Which fragments each page re-renders for each kind of change.
FRAGMENTS: dict[str, dict[str, tuple[str, ...]]] = {
    INDEX: {"playbook": ("report", "history")},
    ENGINE: {"engine": ("queue", "workers", "attention", "throughput", "tasks")},
}
TEMPLATES: dict[str, tuple[str, Callable[[QueryDict], dict[str, Any]]]] = {
    "report": ("selfheal/partials/report.html", lambda query: dashboard.report_context()),
    "history": ("selfheal/partials/history.html", lambda query: dashboard.history_context()),
    "queue": ("selfheal/partials/queue.html", lambda query: dashboard.engine_queue_context()),
    "workers": (
        "selfheal/partials/workers.html",
        lambda query: dashboard.engine_workers_context(),
    ),
    "attention": (
        "selfheal/partials/attention.html",
        lambda query: dashboard.engine_attention_context(),
    ),
    "throughput": (
        "selfheal/partials/throughput.html",
        lambda query: task_list.throughput_context(),
    ),
    # The task list as this page filters it (its filter and page ride in the socket's URL).
    "tasks": ("selfheal/partials/tasks.html", task_list.task_list_context),
}


def render_fragments(names: list[str], user: StaffUser, query: QueryDict | None = None) -> str:
    # Rendered without a request: `perms` as the context processor gives a page.
    perms = PermWrapper(user)
    query = query if query is not None else QueryDict()
    return "\n".join(
        render_to_string(template, {**context(query), "perms": perms, "oob": True})
        for template, context in (TEMPLATES[name] for name in names)
    )


class SelfhealConsumer(PacedRenderConsumer):
    page = INDEX

    def page_groups(self) -> list[str]:
        self.query = QueryDict(self.scope.get("query_string", b"").decode())
        self.page = ENGINE if self.query.getlist("page") == [ENGINE] else INDEX
        return [ENGINE_GROUP]

    async def engine_changed(self, event: dict[str, Any]) -> None:
        self.mark(FRAGMENTS[self.page].get("engine", ()))

    async def playbook_changed(self, event: dict[str, Any]) -> None:
        self.mark(FRAGMENTS[self.page].get("playbook", ()))

    def render(self, changed: set[Any]) -> list[str]:
        names = [name for name in TEMPLATES if name in changed]
        return [render_fragments(names, self.scope["user"], self.query)]
