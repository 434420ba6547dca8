from __future__ import annotations

from chat.models.ratings import RunRating, Verdict
from chat.models.run_messages import RunChatMessage
from chat.models.runs import (
    ACTIVE_STATUSES,
    TRANSITIONS,
    WORKING_STATUSES,
    ChatSession,
    Message,
    Run,
    RunBudget,
    RunStatus,
    StopReason,
    StreamEvent,
    ToolExecution,
    sources_of,
    status_label,
    stop_reason_label,
)

__all__ = [
    "ACTIVE_STATUSES",
    "TRANSITIONS",
    "WORKING_STATUSES",
    "ChatSession",
    "Message",
    "Run",
    "RunBudget",
    "RunChatMessage",
    "RunRating",
    "RunStatus",
    "StopReason",
    "StreamEvent",
    "ToolExecution",
    "Verdict",
    "sources_of",
    "status_label",
    "stop_reason_label",
]
