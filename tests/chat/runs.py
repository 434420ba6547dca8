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


def seqs_of(run: Run) -> list[int]:
    return list(run.events.order_by("seq").values_list("seq", flat=True))


def published_seqs(published: list[tuple[str, dict[str, Any]]]) -> list[list[int]]:
    """The seqs of each message handed to the channel layer (`published` fixture)."""
    return [[event["seq"] for event in message["events"]] for _, message in published]
