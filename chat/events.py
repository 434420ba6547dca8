"""The run event stream: the contract between a run and the browser (DESIGN.md).

`emit()` writes an event first and then, once the transaction commits, publishes it
to the run's channel group with its full data, so consumers render it without the
database. `emit_many()` writes the events of one change in one transaction and
publishes them as one message (the browser gets them in one frame). A browser that
(re)connects asks for the events after the last `seq` it has.

`seq` is gap-free and increasing per run. It is allocated by one statement,
`UPDATE run SET next_seq = next_seq + n ... RETURNING`, which also locks the run's
row until the transaction ends: a second writer of the run (a stop request from the
web while the agent streams) waits for the first to commit, so commit order is seq
order, and a reader that sees seq k also sees every seq below it.

`TokenCoalescer` turns a fast model's tokens into a few writes a second;
`EventWriter` takes the events of a producer faster than one transaction each and
writes them from a thread of its own, each transaction with what queued up since the
last (group commit): a database that syncs every commit to disk does a few hundred
transactions a second, and each one costs every daphne process watching the run a
message and every browser a frame, whatever it holds.

Event data (what the page helper renders; keys are stable, new keys only get added)
-------------------------------------------------------------------------------------

- `status`: `{status, detail}`; status is one of idle, thinking, streaming,
  tool_running, waiting_approval, stopping, stopped; detail is a sentence for people.
- `token`: `{text}`, a coalesced piece of the reply.
- `tool_start`: `{execution_id, tool, arguments, step}`, when a `ToolExecution` row is
  created (a risky call's row is created, and started, when the run pauses for it).
- `tool_result`: `{execution_id, tool, outcome, duration_ms, fingerprint, result,
  error}`; outcome ok, error or refused (bad arguments, a host off the allowlist, a
  rejected approval); fingerprint is empty unless the call failed. Every execution
  gets exactly one `tool_start` and at most one `tool_result`.
- `budget`: `{steps, wall_clock, cost}`, each `{used, limit, percent, state}` (state
  green below 60%, amber 60-85%, red above 85%; cost amounts are exact decimal
  strings, wall clock in seconds), plus `retries: {fingerprint: count}` and
  `retry_limit` (the run's max_retries_per_fingerprint).
- `guardrails`: `{loop, no_progress, repeated_failure}`, each `{count, threshold}`.
- `approval`: `{approval_id, tool, arguments, reason}`; tool is empty when the
  approval is for a model call (arguments are then the approval's proposal).
- `stop_reason`: `{reason, label, suggestion, next_action: {label, kind, ...}}`
  (see `chat.stop_reasons`). Also sent when a run pauses for an approval (reason
  awaiting_approval, next action "approve").
- `error`: `{message}`, the error behind a stop (provider failure, refusal, crash).

The order within one change: `status` first, then tokens, `tool_start`,
`tool_result`, then `budget` and `guardrails`, then `approval`, `stop_reason` and
`error`. A run that stops emits `status` (stopped), `budget`, `guardrails`,
`stop_reason` and, when there was one, `error`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from django.db import connection, connections, transaction

from chat.models import Run, StreamEvent
from controlplane.live import publish

COALESCE_SECONDS = 0.2  # at most ~5 token writes a second per run
COALESCE_CHARACTERS = 400
# An EventWriter starts a transaction at most every WRITER_INTERVAL seconds (each
# one costs the writer, the database and every daphne watching the run about the
# same, whatever it holds), with at most WRITER_BATCH events; a producer that gets
# WRITER_BACKLOG events ahead of the database waits for it (nothing is dropped).
WRITER_INTERVAL = 0.01
WRITER_BATCH = 500
WRITER_BACKLOG = 10_000

EventSpec = tuple[str, dict[str, Any] | None]


def run_group(run_id: int) -> str:
    return f"run.{run_id}"


def event_message(event: StreamEvent) -> dict[str, Any]:
    """One event as consumers receive it: everything needed to render it."""
    return {
        "seq": event.seq,
        "event_type": event.type,
        "at": event.at.isoformat(),
        "data": event.data,
    }


def events_message(run_id: int, events: Sequence[StreamEvent]) -> dict[str, Any]:
    """The `run.events` message: events of one run with consecutive seqs, in order."""
    return {"run_id": run_id, "events": [event_message(event) for event in events]}


def emit(run_id: int, type: str, data: dict[str, Any] | None = None) -> StreamEvent:
    """Write one event of the run (in the caller's transaction, if any) and publish it
    once that commits."""
    return emit_many(run_id, [(type, data)])[0]


def emit_many(run_id: int, events: Sequence[EventSpec]) -> list[StreamEvent]:
    """Write `events` (type, data) of one run, in order, in one transaction, with
    consecutive seqs; publish them as one message when it commits."""
    if not events:
        return []
    with transaction.atomic():
        first = allocate_seqs(run_id, len(events))
        rows = [
            StreamEvent(run_id=run_id, seq=first + offset, type=type, data=data or {})
            for offset, (type, data) in enumerate(events)
        ]
        StreamEvent.objects.bulk_create(rows)
        publish(run_group(run_id), "run.events", **events_message(run_id, rows))
    return rows


def allocate_seqs(run_id: int, count: int) -> int:
    """The first of `count` seqs now the run's; locks its row until the transaction ends.

    One statement: reading `next_seq` and writing it back as two would take the lock
    twice as long (a SELECT FOR UPDATE, then an UPDATE)."""
    quote = connection.ops.quote_name
    table, next_seq = quote(Run._meta.db_table), quote(str(Run._meta.get_field("next_seq").column))
    pk = quote(str(Run._meta.pk.column))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {next_seq} = {next_seq} + %s WHERE {pk} = %s "  # noqa: S608 (names from the model, quoted)
            f"RETURNING {next_seq}",
            [count, run_id],
        )
        row = cursor.fetchone()
    if row is None:
        raise Run.DoesNotExist(f"No run {run_id}.")
    return int(row[0]) - count


def events_after(run_id: int, seq: int, limit: int = 5000) -> list[StreamEvent]:
    return list(StreamEvent.objects.filter(run_id=run_id, seq__gt=seq).order_by("seq")[:limit])


class TokenCoalescer:
    """Buffers streamed text and emits it as `token` events a few times a second."""

    clock = staticmethod(time.monotonic)  # tests drive a fake one

    def __init__(self, run_id: int, *, seconds: float = COALESCE_SECONDS) -> None:
        self.run_id = run_id
        self.seconds = seconds
        self.buffer: list[str] = []
        self.size = 0
        self.last_flush = self.clock()
        self.text = ""  # everything seen, for the final message

    def add(self, text: str) -> None:
        if not text:
            return
        self.buffer.append(text)
        self.size += len(text)
        self.text += text
        if self.size >= COALESCE_CHARACTERS or self.clock() - self.last_flush >= self.seconds:
            self.flush()

    def flush_if_due(self) -> None:
        """A slow model's words still show every fraction of a second."""
        if self.buffer and self.clock() - self.last_flush >= self.seconds:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            emit(self.run_id, StreamEvent.Type.TOKEN, {"text": "".join(self.buffer)})
            self.buffer.clear()
            self.size = 0
        self.last_flush = self.clock()


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
