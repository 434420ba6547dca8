"""Websocket consumers of the core: the base that refuses outsiders, the base of the
live pages that re-render what changed at a bounded pace (Home's own is
`controlplane.home.consumer`), and the pending-approvals fragment as a socket sends it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.contrib.auth.context_processors import PermWrapper
from django.template.loader import render_to_string

from controlplane.tiers import StaffUser, is_staff_member

log = logging.getLogger(__name__)

# A live page's connection renders at most once every RENDER_INTERVAL seconds.
RENDER_INTERVAL = 0.5
# Close codes in the application range: the browser can tell "log in" from "forbidden".
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


class StaffConsumer(AsyncWebsocketConsumer):
    """Accepts only staff (the same check as every staff page); joins `groups_for()`."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if not await database_sync_to_async(self.admits)(user):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.joined = self.groups_for()
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    def admits(self, user: StaffUser) -> bool:
        """Whether this person may watch (in the database thread, so a subclass asks
        what else it needs, `user.has_perm(...)`, in the same hop)."""
        return is_staff_member(user)

    def groups_for(self) -> list[str]:
        return []


class RenderPace:
    """A connection's turn to render: at most one render every `interval` seconds,
    the first at once. Tests give the consumer a pace they advance by hand."""

    interval = RENDER_INTERVAL

    def __init__(self) -> None:
        self.last = float("-inf")

    async def wait_turn(self) -> None:
        loop = asyncio.get_running_loop()
        wait = self.last + self.interval - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        self.last = loop.time()


class PacedRenderConsumer(StaffConsumer):
    """A live page's socket. Events mark what they changed (`mark`); one flusher
    renders everything marked, at most once per RENDER_INTERVAL, until nothing is left,
    so a burst of events (a repair resetting fifty tasks, a thousand claims) costs a
    few renders. Events arriving while it renders are marked for the next round. With
    `catch_up_seconds`, `catch_up()` is asked that often what changed without an event
    (a lease running out, a message the layer dropped). A live update is best effort:
    a render that fails is logged, and the page shows the same data on reload."""

    pace_class: type[RenderPace] = RenderPace
    catch_up_seconds: float | None = None
    flusher: asyncio.Task[None] | None = None
    catcher: asyncio.Task[None] | None = None

    def groups_for(self) -> list[str]:
        self.dirty: set[Any] = set()
        self.pace = self.pace_class()
        return self.page_groups()

    def page_groups(self) -> list[str]:
        """The groups whose events this page follows; reads the page's query."""
        return []

    async def connect(self) -> None:
        await super().connect()
        if getattr(self, "joined", None) is not None:  # accepted
            await self.accepted()
            if self.catch_up_seconds is not None:
                self.catcher = asyncio.create_task(self._catch_up(self.catch_up_seconds))

    async def accepted(self) -> None:
        """Once the socket is open: load what the page showed, to tell changes from it."""

    async def disconnect(self, code: int) -> None:
        for task in (self.flusher, self.catcher):
            if task is not None:
                task.cancel()
        await super().disconnect(code)

    def render(self, changed: set[Any]) -> list[str]:
        """The HTML to send for what changed (run in the database thread)."""
        raise NotImplementedError

    def catch_up(self) -> Iterable[Any]:
        """What changed without an event (run in the database thread)."""
        return ()

    def touched(self, event_type: str) -> Iterable[Any] | None:
        """What a group event of `event_type` marks, for a page that follows a group
        shared with other pages (Home's): an event it does not show marks nothing,
        rather than closing the socket. None: the event goes to the consumer's method
        of its name, as Channels dispatches it."""
        return None

    async def dispatch(self, message: dict[str, Any]) -> None:
        if not message["type"].startswith("websocket."):
            touched = self.touched(message["type"])
            if touched is not None:
                self.mark(touched)
                return
        await super().dispatch(message)

    def mark(self, changed: Iterable[Any]) -> None:
        self.dirty.update(changed)
        if self.dirty and (self.flusher is None or self.flusher.done()):
            self.flusher = asyncio.create_task(self._flush())

    async def _catch_up(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                self.mark(await database_sync_to_async(self.catch_up)())
            except Exception:
                log.exception("%s could not look for changes", type(self).__name__)

    async def _flush(self) -> None:
        while self.dirty:
            await self.pace.wait_turn()
            changed, self.dirty = self.dirty, set()
            try:
                for html in await database_sync_to_async(self.render)(changed):
                    await self.send(text_data=html)
            except Exception:
                log.exception("%s could not render %s", type(self).__name__, sorted(changed)[:20])


def _render_pending_approvals(user: StaffUser) -> str:
    from controlplane.dashboard import pending_approvals_context

    # Rendered without a request: `perms` as the context processor gives a page.
    return render_to_string(
        "controlplane/partials/pending_approvals.html",
        {**pending_approvals_context(user), "perms": PermWrapper(user), "oob": True},
    )
