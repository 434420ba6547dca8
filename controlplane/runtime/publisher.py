"""The thread that sends live events to the channel layer, and the in-memory layer
that can be sent to from any thread (`controlplane.live.publish` is the one way in).

Publishing is synchronous code (a view, the agent in a worker thread, a Celery
task), and a channel layer is asynchronous. `async_to_sync` per event would make and
tear down an event loop each time (and, with Redis, a connection: about 3 ms, so a
few hundred events a second at most); instead every send is handed to one long-lived
loop in a thread of its own (`Publisher`), which keeps the layer's connections and
sends in the order it was given.

The in-memory layer of the embedded mode keeps asyncio queues that belong to the
loop serving the websockets (daphne's). `LocalChannelLayer` hands every send made
from another loop to that one: touched from outside, a queue would not wake the
consumer waiting on it until something else woke daphne's loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Coroutine
from typing import Any

from channels.layers import InMemoryChannelLayer

from controlplane.metrics import count_publish_failure

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT = 5.0  # seconds; a layer slower than this loses the live update
MAX_PENDING = 10_000  # sends waiting for the layer; past this, live updates are dropped


class Publisher:
    """An event loop in a daemon thread that sends what is submitted, in order, one
    send at a time. Submitting does not wait: the producer (an agent streaming a
    reply) goes on at the speed of its database writes. Started on first use, and
    again after a fork (a Celery prefork child does not inherit its parent's threads).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[tuple[Any, str, dict[str, Any]]] | None = None
        self._pid = 0
        self._sender: asyncio.Task[None] | None = None
        self.pending = 0  # submitted, not yet sent (read without the lock: a hint)

    def submit(self, layer: Any, group: str, message: dict[str, Any]) -> None:
        loop, queue = self._started()
        if self.pending >= MAX_PENDING:
            # The layer cannot keep up: the consumers fill the gap from the database.
            log.warning("live updates back up; dropped %s to %s", message["type"], group)
            count_publish_failure("dropped")
            return
        with self._lock:
            self.pending += 1
        loop.call_soon_threadsafe(queue.put_nowait, (layer, group, message))

    def _started(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Queue[Any]]:
        with self._lock:
            if self._loop is None or self._queue is None or self._pid != os.getpid():
                loop = asyncio.new_event_loop()
                queue: asyncio.Queue[Any] = asyncio.Queue()
                self._sender = loop.create_task(self._send_all(queue))
                threading.Thread(
                    target=loop.run_forever, name="live-publisher", daemon=True
                ).start()
                self._loop, self._queue, self._pid, self.pending = loop, queue, os.getpid(), 0
            return self._loop, self._queue

    async def _send_all(self, queue: asyncio.Queue[Any]) -> None:
        while True:
            layer, group, message = await queue.get()
            try:
                await asyncio.wait_for(layer.group_send(group, message), PUBLISH_TIMEOUT)
            except Exception:
                # A live update is best effort: the page shows the same data on reload.
                log.exception("could not publish %s to %s", message["type"], group)
                count_publish_failure("failed")
            finally:
                with self._lock:
                    self.pending -= 1


publisher = Publisher()


class LocalChannelLayer(InMemoryChannelLayer):
    """Channels' in-memory layer (one process), safe to send to from any thread.

    Its queues are used on the loop that last received from it, the one serving the
    websockets; a send from another loop is run on that loop."""

    _serving_loop: asyncio.AbstractEventLoop | None = None

    async def receive(self, channel: str) -> dict[str, Any]:
        self._serving_loop = asyncio.get_running_loop()
        return await super().receive(channel)

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        await self._on_serving_loop(super().send(channel, message))

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        await self._on_serving_loop(super().group_send(group, message))

    async def _on_serving_loop(self, coroutine: Coroutine[Any, Any, None]) -> None:
        loop = self._serving_loop
        if loop is None or not loop.is_running() or loop is asyncio.get_running_loop():
            await coroutine
            return
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, loop))
