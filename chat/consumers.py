"""The run websocket: a run's events as HTML fragments, in order, once each.

On connect the browser says which events it already has (`?after=<seq>`); the
consumer joins the run's group first, then sends what the database holds after that
seq, then live events. It remembers the last seq it sent: live events at or below
it are duplicates and are dropped; one that jumps ahead means the channel layer lost
something (it is a delivery hint, not storage), and the gap is read from the
database before the event is sent. So the browser never sees a gap or a duplicate.

A live message (`run.events`) carries the events of one transaction, consecutive
seqs in order, and goes to the browser as one frame. They are rendered from their
own data, without the database, so the hot path skips the thread hop that a stock
consumer makes before every handler.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async

from chat.events import events_after, run_group
from chat.live_runs import (
    INDEX_GROUP,
    chip_html,
    index_update_html,
    session_group,
    sidebar_html,
)
from chat.models import Run
from chat.rendering import render_live, viewer_permissions
from controlplane.consumers import StaffConsumer
from controlplane.tiers import PermissionSnapshot, StaffUser

CLOSE_NOT_FOUND = 4404
# Missed events are read and sent in batches: one frame each, so a long replay
# neither holds every event in memory nor sends thousands of frames.
REPLAY_BATCH = 500
# Live frames are rendered once for all the sockets of a process that watch a run
# (they are all on the event loop's thread): the last few hundred are kept.
RECENT_FRAMES = 512
_recent_frames: OrderedDict[tuple[int, int, int, PermissionSnapshot], str] = OrderedDict()


def after_seq(query_string: bytes) -> int:
    """The last seq the browser has, from `?after=`; 0 (everything) when absent or bad."""
    values = parse_qs(query_string.decode("latin-1")).get("after") or ["0"]
    try:
        return max(0, int(values[-1]))
    except ValueError:
        return 0


class RunConsumer(StaffConsumer):
    run_id: int
    last_seq: int
    perms: PermissionSnapshot

    async def connect(self) -> None:
        self.run_id = int(self.scope["url_route"]["kwargs"]["run_id"])
        self.last_seq = after_seq(self.scope.get("query_string", b""))
        # Joins the run's group before reading the database: an event committed
        # after the read is then certain to arrive live.
        await super().connect()
        if not getattr(self, "joined", None):
            return  # refused (anonymous or not staff)
        if not await database_sync_to_async(Run.objects.filter(pk=self.run_id).exists)():
            await self.close(code=CLOSE_NOT_FOUND)
            return
        await self.send_missed()

    def admits(self, user: StaffUser) -> bool:
        if not super().admits(user):
            return False
        self.perms = viewer_permissions(user)
        return True

    def groups_for(self) -> list[str]:
        return [run_group(self.run_id)]

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Rendered from the events themselves: no database, so no connection to close.
        if message.get("type") == "run.events":
            await self.run_events(message["events"])
        else:
            await super().dispatch(message)

    async def run_events(self, events: list[dict[str, Any]]) -> None:
        fresh = [event for event in events if int(event["seq"]) > self.last_seq]
        if not fresh:
            return  # already sent (replayed from the database, or delivered twice)
        seqs = [int(event["seq"]) for event in fresh]
        if seqs != list(range(self.last_seq + 1, self.last_seq + 1 + len(seqs))):
            # The layer dropped some: the database holds them all (written first).
            await self.send_missed()
            return
        await self.send(text_data=rendered(self.run_id, fresh, self.perms))
        self.last_seq = seqs[-1]

    async def send_missed(self) -> None:
        """Everything the database holds after `last_seq`, in frames of REPLAY_BATCH."""
        while True:
            html, last_seq, count = await database_sync_to_async(missed_frame)(
                self.run_id, self.last_seq, self.perms
            )
            if count:
                await self.send(text_data=html)
                self.last_seq = last_seq
            if count < REPLAY_BATCH:
                return


def rendered(run_id: int, events: list[dict[str, Any]], perms: PermissionSnapshot) -> str:
    """The live frame of consecutive events, rendered once per process for everyone
    watching the run with the same permissions (an event never changes once written)."""
    key = (run_id, int(events[0]["seq"]), int(events[-1]["seq"]), perms)
    html = _recent_frames.get(key)
    if html is None:
        html = render_live(
            run_id, [(int(e["seq"]), e["event_type"], e["data"]) for e in events], perms=perms
        )
        _recent_frames[key] = html
        if len(_recent_frames) > RECENT_FRAMES:
            _recent_frames.popitem(last=False)
    return html


def missed_frame(run_id: int, after: int, perms: PermissionSnapshot) -> tuple[str, int, int]:
    events = events_after(run_id, after, limit=REPLAY_BATCH)
    html = render_live(run_id, [(e.seq, e.type, e.data) for e in events], perms=perms)
    return html, (events[-1].seq if events else after), len(events)


class SessionConsumer(StaffConsumer):
    """A session page's socket: its runs' chips as their status changes (rendered from
    the message, without the database), and its Runs sidebar when a run is added."""

    session_id: int

    async def connect(self) -> None:
        self.session_id = int(self.scope["url_route"]["kwargs"]["session_id"])
        await super().connect()

    def groups_for(self) -> list[str]:
        return [session_group(self.session_id)]

    async def run_changed(self, message: dict[str, Any]) -> None:
        html = chip_html(message)
        if message.get("created"):
            html += await database_sync_to_async(sidebar_html)(self.session_id)
        await self.send(text_data=html)


class SessionsConsumer(StaffConsumer):
    """The chat index's socket: "Running now", and each session's last-run chip."""

    def groups_for(self) -> list[str]:
        return [INDEX_GROUP]

    async def run_changed(self, message: dict[str, Any]) -> None:
        html = await database_sync_to_async(index_update_html)(int(message["session_id"]))
        await self.send(text_data=html)
