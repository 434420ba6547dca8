from __future__ import annotations

from chat.models.runs import (
    ACTIVE_STATUSES,
    ChatSession,
    Message,
    Run,
    RunBudget,
    RunStatus,
    StopReason,
    StreamEvent,
    ToolExecution,
)

__all__ = [
    "ACTIVE_STATUSES",
    "ChatSession",
    "Message",
    "Run",
    "RunBudget",
    "RunStatus",
    "StopReason",
    "StreamEvent",
    "ToolExecution",
]
