"""The Self-heal and Engine pages' websocket: re-rendered fragments, never JSON.

A page says which it is (`?page=index` or `?page=engine`); each connection renders
only that page's fragments, with the same templates as the full page and as its
user (the buttons depend on the tier). A burst of events (a repair resetting fifty
tasks, a thousand claims) is coalesced: a connection renders at most once every
`RENDER_INTERVAL` seconds, covering every event that arrived meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from channels.db import database_sync_to_async
from django.contrib.auth.context_processors import PermWrapper
from django.http import QueryDict
from django.template.loader import render_to_string

from controlplane.consumers import StaffConsumer
from controlplane.tiers import StaffUser
from selfheal import dashboard, task_list
from selfheal.engine import ENGINE_GROUP

log = logging.getLogger(__name__)

RENDER_INTERVAL = 0.5
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


class RenderPace:
    """A connection's turn to render: at most one render every RENDER_INTERVAL
    seconds, the first at once. Tests give the consumer a pace they advance by hand."""

    def __init__(self) -> None:
        self.last = float("-inf")

    async def wait_turn(self) -> None:
        loop = asyncio.get_running_loop()
        wait = self.last + RENDER_INTERVAL - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        self.last = loop.time()


class SelfhealConsumer(StaffConsumer):
    page = INDEX
    pace_class: type[RenderPace] = RenderPace
    flusher: asyncio.Task[None] | None = None

    def groups_for(self) -> list[str]:
        self.query = QueryDict(self.scope.get("query_string", b"").decode())
        self.page = ENGINE if self.query.getlist("page") == [ENGINE] else INDEX
        self.dirty: set[str] = set()
        self.pace = self.pace_class()
        return [ENGINE_GROUP]

    async def disconnect(self, code: int) -> None:
        if self.flusher is not None:
            self.flusher.cancel()
        await super().disconnect(code)

    async def engine_changed(self, event: dict[str, Any]) -> None:
        self._changed("engine")

    async def playbook_changed(self, event: dict[str, Any]) -> None:
        self._changed("playbook")

    def _changed(self, kind: str) -> None:
        fragments = FRAGMENTS[self.page].get(kind, ())
        if not fragments:
            return
        self.dirty.update(fragments)
        if self.flusher is None or self.flusher.done():
            self.flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        """Render what changed, at most once per RENDER_INTERVAL, until nothing is left.
        Events arriving while it renders mark fragments dirty for the next round."""
        while self.dirty:
            await self.pace.wait_turn()
            names = [name for name in TEMPLATES if name in self.dirty]
            self.dirty.clear()
            try:
                html = await database_sync_to_async(render_fragments)(
                    names, self.scope["user"], self.query
                )
                await self.send(text_data=html)
            except Exception:
                # A live update is best effort: the page shows the same data on reload.
                log.exception("could not render self-heal fragments %s", names)
