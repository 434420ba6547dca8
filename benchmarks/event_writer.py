"""A run's events from a producer faster than one transaction an event (group commit),
as `bin/manage bench_events` produces them.

`EventWriter` writes them from a thread of its own, each transaction with what queued
up since the last: a database that syncs every commit to disk does a few hundred
transactions a second, and each one costs every daphne process watching the run a
message and every browser a frame, whatever it holds.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from django.db import connections

from chat.events import EventSpec, emit_many

# An EventWriter starts a transaction at most every WRITER_INTERVAL seconds (each
# one costs the writer, the database and every daphne watching the run about the
# same, whatever it holds), with at most WRITER_BATCH events; a producer that gets
# WRITER_BACKLOG events ahead of the database waits for it (nothing is dropped).
WRITER_INTERVAL = 0.01
WRITER_BATCH = 500
WRITER_BACKLOG = 10_000


class EventWriterError(RuntimeError):
    """The writer could not write: the events given after the last written are lost."""


class EventWriter:
    """One run's events from a producer faster than a transaction an event (group commit).

    `emit()` queues the event and returns; a thread of the writer's own writes what
    has queued with `emit_many()`, so the events of one transaction are those that
    came while the last one committed, or within `interval` of its start: a
    transaction each at a slow pace, at most 1/`interval` a second however fast the
    producer goes. Events keep the order they were given; other writers of the run
    (a stop from the web) come between two of the writer's transactions, never
    inside one. `close()` (or leaving the `with` block) waits until everything given
    is written, and raises what stopped the writer.
    """

    def __init__(
        self, run_id: int, *, interval: float = WRITER_INTERVAL, batch: int = WRITER_BATCH
    ) -> None:
        self.run_id = run_id
        self.interval = interval
        self.batch = batch
        self.written = 0
        self._last_write = 0.0
        self._queued: list[EventSpec] = []
        self._changed = threading.Condition()
        self._closing = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._write_all, name=f"event-writer-{run_id}", daemon=True
        )
        self._thread.start()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def emit(self, type: str, data: dict[str, Any] | None = None) -> None:
        with self._changed:
            while len(self._queued) >= WRITER_BACKLOG and self._error is None:
                self._changed.wait()  # far ahead of the database: wait, drop nothing
            self._raise_if_failed()
            if self._closing:
                raise EventWriterError("This writer is closed.")
            self._queued.append((type, data))
            if len(self._queued) in (1, self.batch):
                self._changed.notify_all()  # the writer waits for a first or a full batch

    def close(self) -> None:
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._thread.join()
        with self._changed:
            self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise EventWriterError(
                f"Writing events of run {self.run_id} failed after {self.written}."
            ) from self._error

    def _write_all(self) -> None:
        try:
            while batch := self._next_batch():
                self._last_write = time.monotonic()
                emit_many(self.run_id, batch)
                self.written += len(batch)
        except BaseException as exc:
            with self._changed:
                self._error = exc
                self._changed.notify_all()
        finally:
            connections.close_all()  # this thread's own connection

    def _next_batch(self) -> list[EventSpec]:
        """What has queued (up to `batch`), once `interval` has passed since the last
        write began; empty once closed and done."""
        with self._changed:
            while not self._closing and len(self._queued) < self.batch:
                if not self._queued:
                    self._changed.wait()
                    continue
                wait = self._last_write + self.interval - time.monotonic()
                if wait <= 0:
                    break
                self._changed.wait(wait)
            batch, self._queued = self._queued[: self.batch], self._queued[self.batch :]
            self._changed.notify_all()
            return batch
