"""Reading a model's stream without letting a silent provider hold the loop.

The loop reads the stream in a thread of its own (`ThreadedStream`), so it keeps
polling for a stop request while the provider is silent or still thinking before its
first byte. A call given up that way is closed by that thread when the provider
returns, and settled for what it streamed. The exception is a loop whose caller holds
a database transaction (tests that wrap each test in one): another thread could not
see its rows, so it reads the stream inline (`InlineStream`) and checks between chunks.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

from django.db import connection, connections

from routing import calls
from routing.call_refusals import CallFailed
from routing.calls import CallResult
from routing.providers import StreamChunk


class InlineStream:
    """The stream read in the loop's own thread (the caller holds a transaction)."""

    def __init__(self, call: calls.StreamingCall) -> None:
        self.call = call
        self.items = iter(call)

    def next(self, timeout: float) -> StreamChunk | CallResult | None:
        try:
            return next(self.items)
        except StopIteration:
            raise CallFailed("The model's stream ended without a result.") from None

    def close(self) -> None:
        self.call.events.close()


_END = object()
_abandoned: set[ThreadedStream] = set()
_abandoned_lock = threading.Lock()


class ThreadedStream:
    """The stream read by a thread of its own, so that the loop keeps polling for a stop
    while the provider is silent. A stream given up is closed by that thread."""

    def __init__(self, call: calls.StreamingCall) -> None:
        self.call = call
        self.items: queue.Queue[Any] = queue.Queue()
        self.cancelled = threading.Event()
        self.thread = threading.Thread(target=self._read, name="chat-model-stream", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for item in self.call:
                if self.cancelled.is_set():
                    break
                self.items.put(item)
        except Exception as exc:
            self.items.put(exc)
        finally:
            try:
                self.call.events.close()  # settles a call given up mid-stream
            finally:
                self.items.put(_END)
                connections.close_all()  # this thread's connections only

    def next(self, timeout: float) -> StreamChunk | CallResult | None:
        try:
            item = self.items.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _END:
            raise CallFailed("The model's stream ended without a result.")
        if isinstance(item, Exception):
            raise item
        return item

    def close(self) -> None:
        if self.cancelled.is_set():
            return
        self.cancelled.set()
        with _abandoned_lock:
            _abandoned.difference_update([s for s in _abandoned if not s.thread.is_alive()])
            if self.thread.is_alive():
                _abandoned.add(self)


def open_stream(call: calls.StreamingCall) -> InlineStream | ThreadedStream:
    if connection.in_atomic_block:
        return InlineStream(call)
    return ThreadedStream(call)


def wait_for_abandoned_calls(timeout: float = 30.0) -> bool:
    """Wait for model calls given up mid-stream to be closed and settled (a command
    about to exit, a test about to clean up). Whether they all were."""
    deadline = time.monotonic() + timeout
    with _abandoned_lock:
        pending = list(_abandoned)
    for stream in pending:
        stream.thread.join(max(deadline - time.monotonic(), 0))
    with _abandoned_lock:
        _abandoned.difference_update([s for s in pending if not s.thread.is_alive()])
        return not _abandoned
