"""Home's websocket: the cards an event touched, re-rendered and sent as HTML that
htmx swaps out of band. It listens to Home's own group and to the groups the cards
registered (the engine's, the log monitor's...), so those producers need not know
Home exists. Bursts are coalesced: at most one render every `RENDER_INTERVAL`
seconds, covering every card touched meanwhile. Cards whose content changes with time
alone (a lease running out makes a task stuck; the last hour moves on) are rendered
again every `catch_up_seconds` besides."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.db import database_sync_to_async

from controlplane.consumers import StaffConsumer
from controlplane.home.cards import (
    aging_cards,
    cards_touched,
    home_cards,
    live_groups,
    render_cards,
)

log = logging.getLogger(__name__)

RENDER_INTERVAL = 0.5


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


class HomeConsumer(StaffConsumer):
    pace_class: type[RenderPace] = RenderPace
    catch_up_seconds = 30.0
    flusher: asyncio.Task[None] | None = None
    catcher: asyncio.Task[None] | None = None

    def groups_for(self) -> list[str]:
        self.dirty: set[str] = set()
        self.pace = self.pace_class()
        return live_groups()

    async def connect(self) -> None:
        await super().connect()
        if getattr(self, "joined", None):  # accepted
            self.catcher = asyncio.create_task(self._catch_up())

    async def disconnect(self, code: int) -> None:
        for task in (self.flusher, self.catcher):
            if task is not None:
                task.cancel()
        await super().disconnect(code)

    async def _catch_up(self) -> None:
        while True:
            await asyncio.sleep(self.catch_up_seconds)
            self._mark(aging_cards())

    async def dispatch(self, message: dict[str, Any]) -> None:
        """The websocket's own messages as any consumer's; every group event marks the
        cards it touches. An event of a type Home does not show (the groups are other
        pages' too) is ignored rather than closing the socket."""
        if message["type"].startswith("websocket."):
            await super().dispatch(message)
        else:
            self._changed(message)

    def _changed(self, event: dict[str, Any]) -> None:
        self._mark(cards_touched(event["type"]))

    def _mark(self, cards: set[str]) -> None:
        self.dirty.update(cards)
        if self.dirty and (self.flusher is None or self.flusher.done()):
            self.flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        """Render what changed until nothing is left; events arriving while it renders
        mark cards for the next round."""
        while self.dirty:
            await self.pace.wait_turn()
            names = [card.name for card in home_cards() if card.name in self.dirty]
            self.dirty.clear()
            try:
                html = await database_sync_to_async(render_cards)(names, self.scope["user"])
                await self.send(text_data=html)
            except Exception:
                # A live update is best effort: the page shows the same data on reload.
                log.exception("could not render Home's cards %s", names)
