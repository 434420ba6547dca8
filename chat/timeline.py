"""The tool timeline's events: one `tool_start` and at most one `tool_result` for
every `ToolExecution` of a run (their data is documented in `chat.events`)."""

from __future__ import annotations

from chat.events import EventSpec, emit
from chat.models import StreamEvent, ToolExecution


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


def emit_tool_result(execution: ToolExecution) -> None:
    emit(execution.run_id, *tool_result_event(execution))
