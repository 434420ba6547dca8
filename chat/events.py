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

`TokenCoalescer` turns a fast model's tokens into a few writes a second.

Event data (what the page helper renders; keys are stable, new keys only get added)
-------------------------------------------------------------------------------------

- `status`: `{status, detail, clock_since}`; status is one of idle, thinking,
  streaming, tool_running, waiting_approval, stopping, stopped; detail is a sentence
  for people; clock_since (epoch seconds, only while the agent loop works the run) is
  when its wall clock would read 0, so the page ticks the clock between events.
- `token`: `{text, step}`, a coalesced piece of the reply; step only on the first
  piece of a step's text (the page sets each step's reply apart).
- `model_call`: `{call_id, step, model, phase, started_at, outcome, duration_ms,
  input_tokens, output_tokens, cost, error}`; phase started (with started_at, an ISO
  time) when the model starts answering, then finished with outcome ok (tokens and
  cost, an exact decimal string), stopped (the run stopped mid-stream) or failed.
- `tool_start`: `{execution_id, tool, arguments, step, started_at, outcome}`, when a
  `ToolExecution` row is created (a risky call's row is created when the run pauses
  for it, with outcome awaiting_approval; otherwise outcome running).
- `tool_result`: `{execution_id, tool, outcome, duration_ms, fingerprint, result,
  error}`; outcome ok, error or refused (bad arguments, a host off the allowlist, a
  rejected approval); fingerprint is empty unless the call failed. Every execution
  gets exactly one `tool_start` and at most one final `tool_result`; a call that
  waited for an approval gets one more before it, outcome running, once granted.
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

The order within one change: `status` first, then tokens, `model_call`, `tool_start`,
`tool_result`, then `budget` and `guardrails`, then `approval`, `stop_reason` and
`error`. A run that stops emits `status` (stopped), `budget`, `guardrails`,
`stop_reason` and, when there was one, `error`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from django.db import connection, transaction

from chat.models import Run, StreamEvent
from controlplane.live import HOME_GROUP, home_announcements, publish

COALESCE_SECONDS = 0.2  # at most ~5 token writes a second per run
COALESCE_CHARACTERS = 400
# The events that change what Home's runs card shows (status, step, cost).
HOME_EVENT_TYPES = frozenset({StreamEvent.Type.STATUS, StreamEvent.Type.BUDGET})

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
        if any(type in HOME_EVENT_TYPES for type, _ in events):
            home_announcements.announce(HOME_GROUP, "home.runs")
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

    def __init__(
        self, run_id: int, *, seconds: float = COALESCE_SECONDS, step: int | None = None
    ) -> None:
        self.run_id = run_id
        # The first piece of a step's text says which step it starts, so the page
        # sets each step's reply apart from the one before.
        self.step = step
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
            data: dict[str, Any] = {"text": "".join(self.buffer)}
            if self.step is not None:
                data["step"], self.step = self.step, None
            emit(self.run_id, StreamEvent.Type.TOKEN, data)
            self.buffer.clear()
            self.size = 0
        self.last_flush = self.clock()
