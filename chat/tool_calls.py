"""A model's tool call, run and recorded: its `ToolExecution` row with outcome,
duration and failure fingerprint, its events on the run's tool timeline (one
`tool_start` and at most one `tool_result` per execution; their data is documented
in `chat.events`), and its result as the conversation's tool message.

A safe tool runs in a thread of its own (`ToolThread`) while the loop keeps asking
whether to stop: a stop request ends the run within its poll, whatever the tool is
waiting for. The call is then cancelled (its context's event is set) and abandoned,
and its row says `cancelled`. A risky tool (it changes something, once approved) and
any tool of a loop whose caller holds a database transaction (tests that wrap each
test in one: another thread could not see its rows) run inline, to the end.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from django.db import connection, connections
from django.utils import timezone

from chat import tools
from chat.events import EventSpec, emit
from chat.guardrails import fingerprint
from chat.models import Message, Run, StreamEvent, ToolExecution
from controlplane.tiers import StaffUser


def tool_start_event(execution: ToolExecution) -> EventSpec:
    return StreamEvent.Type.TOOL_START, {
        "execution_id": execution.pk,
        "tool": execution.tool,
        "arguments": execution.arguments,
        "step": execution.step,
        "started_at": execution.started_at.isoformat() if execution.started_at else None,
        "outcome": execution.outcome,  # awaiting_approval for a risky call's paused row
    }


def approval_granted(execution: ToolExecution) -> None:
    """A paused risky call, its approval granted, runs now: its row says so (a
    `tool_result` with outcome running; the final one follows)."""
    execution.outcome = ToolExecution.Outcome.RUNNING
    execution.save(update_fields=["outcome"])
    emit(
        execution.run_id,
        StreamEvent.Type.TOOL_RESULT,
        {"execution_id": execution.pk, "tool": execution.tool, "outcome": execution.outcome},
    )


def tool_result_event(execution: ToolExecution) -> EventSpec:
    return StreamEvent.Type.TOOL_RESULT, {
        "execution_id": execution.pk,
        "tool": execution.tool,
        "outcome": execution.outcome,
        "duration_ms": execution.duration_ms,
        "fingerprint": execution.fingerprint,
        "result": execution.result,
        "error": execution.error,
    }


def emit_tool_start(execution: ToolExecution) -> None:
    emit(execution.run_id, *tool_start_event(execution))


POLL_SECONDS = 0.25  # as the loop's STOP_POLL_SECONDS: a stop is seen this soon

_abandoned: set[ToolThread] = set()
_abandoned_lock = threading.Lock()


class ToolThread:
    """One tool call running in a thread of its own, so that the loop can give it up."""

    def __init__(self, tool: tools.Tool, arguments: dict[str, Any], context: tools.ToolContext):
        self.context = context
        self.outcome: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)
        self.thread = threading.Thread(
            target=self._run, args=(tool, arguments), name=f"chat-tool-{tool.name}", daemon=True
        )
        self.thread.start()

    def _run(self, tool: tools.Tool, arguments: dict[str, Any]) -> None:
        try:
            self.outcome.put((True, tools.run_tool(tool, arguments, self.context)))
        except Exception as exc:
            self.outcome.put((False, exc))
        finally:
            connections.close_all()  # this thread's connections only

    def wait(self, timeout: float) -> tuple[bool, Any] | None:
        """(succeeded, result or exception) once the tool returned; None meanwhile."""
        try:
            return self.outcome.get(timeout=timeout)
        except queue.Empty:
            return None

    def cancel(self) -> None:
        self.context.cancelled.set()
        with _abandoned_lock:
            _abandoned.difference_update([t for t in _abandoned if not t.thread.is_alive()])
            if self.thread.is_alive():
                _abandoned.add(self)


def wait_for_abandoned_tools(timeout: float = 30.0) -> bool:
    """Wait for cancelled tool calls' threads to end (a command about to exit, a test
    about to clean up). Whether they all did."""
    deadline = time.monotonic() + timeout
    with _abandoned_lock:
        pending = list(_abandoned)
    for call in pending:
        call.thread.join(max(deadline - time.monotonic(), 0))
    with _abandoned_lock:
        _abandoned.difference_update([t for t in pending if not t.thread.is_alive()])
        return not _abandoned


def _run_until_stopped(
    tool: tools.Tool,
    arguments: dict[str, Any],
    context: tools.ToolContext,
    stop_due: Callable[[], Any],
) -> tuple[bool, Any, Any]:
    """(succeeded, the tool's result or what it raised, None), or (False, None, the
    stop) when a stop came first. What `stop_due` raises goes through, the call given up."""
    if tool.risky or connection.in_atomic_block:
        try:
            return True, tools.run_tool(tool, arguments, context), None
        except Exception as exc:
            return False, exc, None
    call = ToolThread(tool, arguments, context)
    try:
        while (done := call.wait(POLL_SECONDS)) is None:
            stop = stop_due()
            if stop is not None:
                call.cancel()
                return False, None, stop
    except BaseException:
        call.cancel()  # the loop is unwinding (the run ended elsewhere): give it up too
        raise
    succeeded, value = done
    return succeeded, value, None


def execute(
    execution: ToolExecution,
    tool: tools.Tool | None,
    refusal: Exception | None,
    *,
    user: StaffUser,
    stop_due: Callable[[], Any] = lambda: None,
) -> Any:
    """Run the call (or record its refusal), save its row and emit its `tool_result`.
    A failure gets a fingerprint, so the same failure is recognised next time.
    `stop_due()` is asked while the tool runs; the first stop it returns cancels the
    call (outcome cancelled, no fingerprint: nothing failed) and is returned, for the
    loop to act on."""
    began = time.perf_counter()
    result: Any = None
    stop: Any = None
    outcome, error = ToolExecution.Outcome.OK, ""
    if refusal is not None or tool is None:
        outcome, error = ToolExecution.Outcome.REFUSED, str(refusal or "No such tool.")
    else:
        context = tools.ToolContext(run_id=execution.run_id, user=user)
        try:
            succeeded, value, stop = _run_until_stopped(
                tool, execution.arguments, context, stop_due
            )
        except BaseException:
            _record(execution, ToolExecution.Outcome.CANCELLED, None, "The run ended.", began)
            raise
        if stop is not None:
            detail = getattr(stop, "detail", "") or "The run was stopped."
            outcome, error = ToolExecution.Outcome.CANCELLED, f"Cancelled while running: {detail}"
        elif succeeded:
            result = value
        elif isinstance(value, tools.ToolRefused):
            outcome, error = ToolExecution.Outcome.REFUSED, str(value)
        elif isinstance(value, tools.ToolCancelled):
            outcome, error = ToolExecution.Outcome.CANCELLED, str(value)
        else:
            outcome, error = ToolExecution.Outcome.ERROR, f"{type(value).__name__}: {value}"
    _record(execution, outcome, result, error, began)
    return stop


def _record(execution: ToolExecution, outcome: str, result: Any, error: str, began: float) -> None:
    execution.outcome, execution.result, execution.error = outcome, result, error
    execution.duration_ms = int((time.perf_counter() - began) * 1000)
    execution.finished_at = timezone.now()
    if error and outcome != ToolExecution.Outcome.CANCELLED:
        execution.fingerprint = fingerprint(f"{execution.tool}: {error}")
    execution.save()
    emit(execution.run_id, *tool_result_event(execution))


def remember_result(run: Run, execution: ToolExecution) -> dict[str, Any]:
    """Store the call's result (or error) in the conversation; the model's message."""
    body = execution.result if not execution.error else {"error": execution.error}
    content = json.dumps(body, ensure_ascii=False)
    Message.objects.create(
        session_id=run.session_id,
        run=run,
        role=Message.Role.TOOL,
        content=content,
        tool_call_id=execution.call_id,
    )
    return {"role": "tool", "tool_call_id": execution.call_id, "content": content}
