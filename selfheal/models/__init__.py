from __future__ import annotations

from selfheal.models.engine import (
    OPEN_STATUSES,
    TRANSITIONS,
    Task,
    TaskStatus,
    Worker,
)
from selfheal.models.playbooks import AutoHealRule, AutoHealRun, PlaybookExecution

__all__ = [
    "OPEN_STATUSES",
    "TRANSITIONS",
    "AutoHealRule",
    "AutoHealRun",
    "PlaybookExecution",
    "Task",
    "TaskStatus",
    "Worker",
]
