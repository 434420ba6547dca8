"""A model's tool call, run and recorded: its `ToolExecution` row with outcome,
duration and failure fingerprint, its events on the run's tool timeline (one
`tool_start` and at most one `tool_result` per execution; their data is documented
in `chat.events`), and its result as the conversation's tool message."""

from __future__ import annotations

import json
import time
from typing import Any

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
    }


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


def execute(
    execution: ToolExecution,
    tool: tools.Tool | None,
    refusal: Exception | None,
    *,
    user: StaffUser,
) -> None:
    """Run the call (or record its refusal), save its row and emit its `tool_result`.
    A failure gets a fingerprint, so the same failure is recognised next time."""
    began = time.perf_counter()
    result: Any = None
    outcome, error = ToolExecution.Outcome.OK, ""
    if refusal is not None or tool is None:
        outcome, error = ToolExecution.Outcome.REFUSED, str(refusal or "No such tool.")
    else:
        try:
            context = tools.ToolContext(run_id=execution.run_id, user=user)
            result = tools.run_tool(tool, execution.arguments, context)
        except tools.ToolRefused as exc:
            outcome, error = ToolExecution.Outcome.REFUSED, str(exc)
        except Exception as exc:
            outcome, error = ToolExecution.Outcome.ERROR, f"{type(exc).__name__}: {exc}"
    execution.outcome, execution.result, execution.error = outcome, result, error
    execution.duration_ms = int((time.perf_counter() - began) * 1000)
    execution.finished_at = timezone.now()
    if error:
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
