"""Runs for the chat tests that need one with no agent behind it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from chat.models import ChatSession, Run


def make_run(user: Any) -> Run:
    chat = ChatSession.objects.create(user=user, title="Live")
    return Run.objects.create(
        session=chat,
        started_by=user,
        mode="normal",
        max_steps=10,
        max_wall_clock_seconds=300,
        max_cost=Decimal("0.50"),
    )
