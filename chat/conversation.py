"""The conversation the model sees: the session's messages up to a run, as OpenAI
chat messages, opened by the mode's system prompt."""

from __future__ import annotations

import json
from typing import Any

from django.db.models import Q

from chat.models import Message, Run
from routing.models import Mode

SYSTEM_PROMPT = (
    "You are the operations agent of a control plane for AI operations, working in "
    "{mode} mode. Do what the person asks. Call a tool when it helps; when you have "
    "the answer, reply without calling a tool. Say plainly when you cannot do something."
)


def conversation(run: Run) -> list[dict[str, Any]]:
    """The session's messages up to this run, as OpenAI chat messages. A tool call a
    stopped run never answered gets a stand-in result, so the history stays valid."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM_PROMPT.format(mode=Mode(run.mode).label)}
    ]
    rows = Message.objects.filter(session_id=run.session_id).filter(
        Q(run__isnull=True) | Q(run_id__lte=run.pk)
    )
    unanswered: list[str] = []
    for row in rows.order_by("created_at", "id"):
        if row.role != Message.Role.TOOL:
            messages += [stand_in_result(call_id) for call_id in unanswered]
            unanswered = []
        if row.role == Message.Role.ASSISTANT:
            messages.append(assistant_message(row.content, row.tool_calls or []))
            unanswered = [call["id"] for call in row.tool_calls or []]
        elif row.role == Message.Role.TOOL:
            if row.tool_call_id in unanswered:
                unanswered.remove(row.tool_call_id)
                messages.append(
                    {"role": "tool", "tool_call_id": row.tool_call_id, "content": row.content}
                )
        else:
            messages.append({"role": str(row.role), "content": row.content})
    return messages


def assistant_message(content: str, tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content or None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def stand_in_result(call_id: str) -> dict[str, Any]:
    content = json.dumps({"error": "Not run: the run stopped before this call."})
    return {"role": "tool", "tool_call_id": call_id, "content": content}
