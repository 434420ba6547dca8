"""The run's timeline rows: each model call and each tool call, with when it started,
how long it took and, for a model call, its tokens and cost. A row is merged from its
events' data (`tool_start` then `tool_result`; `model_call` started then finished),
documented in `chat.events`."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

# A tool call's outcomes that are not an ending: the row still waits for its result.
UNFINISHED_OUTCOMES = ("running", "awaiting_approval")


def merged(parts: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for part in parts:
        found.update({key: value for key, value in part.items() if value is not None})
    return found


def tool_row(*parts: dict[str, Any]) -> dict[str, Any]:
    """A timeline row from a tool_start and (when they came) its tool_results."""
    found = merged(parts)
    outcome = str(found.get("outcome") or "running")
    has_arguments = "arguments" in found
    has_result = "result" in found and found["result"] is not None
    return {
        "kind": "tool",
        "id": found.get("execution_id", ""),
        "name": found.get("tool", ""),
        "step": found.get("step"),
        "started_at": moment(found.get("started_at")),
        "outcome": outcome,
        "outcome_label": outcome.replace("_", " "),
        "failed": outcome in ("error", "refused"),
        "finished": outcome not in UNFINISHED_OUTCOMES,
        "duration_ms": found.get("duration_ms"),
        "fingerprint": found.get("fingerprint") or "",
        "arguments": pretty_json(found.get("arguments")) if has_arguments else "",
        "has_arguments": has_arguments,
        "result": pretty_json(found.get("result")) if has_result else "",
        "has_result": has_result,
        "error": found.get("error") or "",
    }


def model_call_row(*parts: dict[str, Any]) -> dict[str, Any]:
    """A timeline row from a model call's started and (when it came) finished event."""
    found = merged(parts)
    finished = found.get("phase") == "finished"
    outcome = str(found.get("outcome") or "") if finished else "streaming"
    input_tokens, output_tokens = found.get("input_tokens"), found.get("output_tokens")
    return {
        "kind": "model",
        "id": str(found.get("call_id", "")),
        "step": found.get("step"),
        "model": found.get("model", ""),
        "started_at": moment(found.get("started_at")),
        "outcome": outcome,
        "outcome_label": {"ok": "answered", "stopped": "stopped mid-answer"}.get(outcome, outcome),
        "finished": finished,
        "duration_ms": found.get("duration_ms"),
        "has_usage": input_tokens is not None,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cost": decimal_or_none(found.get("cost")),
        "error": found.get("error") or "",
    }


def moment(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def decimal_or_none(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def pretty_json(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
