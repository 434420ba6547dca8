"""The run event stream: the contract between a run and the browser (DESIGN.md).

`emit()` writes the event first (a gap-free `seq` per run, allocated under the run
row's lock) and then, once the transaction commits, publishes it to the run's
channel group with its full data, so consumers render it without the database.
A browser that (re)connects asks for the events after the last `seq` it has.
`TokenCoalescer` turns a fast model's tokens into a few writes a second.

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

import time
from typing import Any

from django.db import transaction
from django.db.models import F

from chat.models import Run, StreamEvent
from controlplane.live import publish

COALESCE_SECONDS = 0.2  # at most ~5 token writes a second per run
COALESCE_CHARACTERS = 400


def run_group(run_id: int) -> str:
    return f"run.{run_id}"


def event_message(event: StreamEvent) -> dict[str, Any]:
    """What consumers receive: everything needed to render the event."""
    return {
        "run_id": event.run_id,
        "seq": event.seq,
        "event_type": event.type,
        "at": event.at.isoformat(),
        "data": event.data,
    }


def emit(run_id: int, type: str, data: dict[str, Any] | None = None) -> StreamEvent:
    with transaction.atomic():
        # The row lock serialises writers of one run, so seq has no gaps or repeats.
        seq = Run.objects.select_for_update().values_list("next_seq", flat=True).get(pk=run_id)
        Run.objects.filter(pk=run_id).update(next_seq=F("next_seq") + 1)
        event = StreamEvent.objects.create(run_id=run_id, seq=seq, type=type, data=data or {})
        publish(run_group(run_id), "run.event", **event_message(event))
    return event


def events_after(run_id: int, seq: int, limit: int = 5000) -> list[StreamEvent]:
    return list(StreamEvent.objects.filter(run_id=run_id, seq__gt=seq).order_by("seq")[:limit])


class TokenCoalescer:
    """Buffers streamed text and emits it as `token` events a few times a second."""

    def __init__(self, run_id: int, *, seconds: float = COALESCE_SECONDS) -> None:
        self.run_id = run_id
        self.seconds = seconds
        self.buffer: list[str] = []
        self.size = 0
        self.last_flush = time.monotonic()
        self.text = ""  # everything seen, for the final message

    def add(self, text: str) -> None:
        if not text:
            return
        self.buffer.append(text)
        self.size += len(text)
        self.text += text
        if self.size >= COALESCE_CHARACTERS or time.monotonic() - self.last_flush >= self.seconds:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            emit(self.run_id, StreamEvent.Type.TOKEN, {"text": "".join(self.buffer)})
            self.buffer.clear()
            self.size = 0
        self.last_flush = time.monotonic()
