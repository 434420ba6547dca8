"""Runs played against a scripted model, and what the tests read back from them.

Background work runs inline in tests (BACKGROUND_EAGER) once the transaction
commits; inside a test's transaction that means when the captured on-commit
callbacks are executed, so a run started in `capture(execute=True)` has finished (or
paused) when the block ends.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from importlib import import_module
from typing import Any

import pytest
from django.apps import apps

from chat import tools
from chat.models import ChatSession, Run, StreamEvent
from chat.runs import start_run
from controlplane.models import FeatureToggle
from tests.scripted_providers import ScriptedProvider, Turn, use_scripted

OFFLINE = "offline"  # the catalog provider of the seeded "agent" route
SEEDS = (
    "routing.migrations.0002_seed_catalog_policies_routes",
    "chat.migrations.0002_run_budgets",
    "chat.migrations.0003_runs_toggle",
)


def reseed() -> None:
    """What the migrations seed, again: a transactional test's flush removed it."""
    for module in SEEDS:
        import_module(module).seed(apps, None)


def run_scripted(
    turns: Sequence[Turn],
    *,
    user: Any,
    capture: Any,
    message: str = "Check the queue for me.",
    mode: str = "normal",
    limits: dict[str, Any] | None = None,
) -> tuple[Run, ScriptedProvider]:
    """Start a run whose model plays `turns`; returns it once it stopped or paused."""
    scripted = ScriptedProvider(turns)
    session = ChatSession.objects.create(user=user, mode=mode)
    with use_scripted(OFFLINE, scripted), capture(execute=True):
        run = start_run(session, user=user, message=message, mode=mode, limits=limits)
    run.refresh_from_db()
    return run, scripted


def events_of(run: Run, event_type: str | None = None) -> list[StreamEvent]:
    events = StreamEvent.objects.filter(run=run).order_by("seq")
    if event_type is not None:
        events = events.filter(type=event_type)
    return list(events)


def types_of(run: Run) -> list[str]:
    return [event.type for event in events_of(run)]


def last_data(run: Run, event_type: str) -> dict[str, Any]:
    found = events_of(run, event_type)
    assert found, f"run #{run.pk} has no {event_type} event"
    return found[-1].data


def stop_reason_of(run: Run) -> dict[str, Any]:
    return last_data(run, StreamEvent.Type.STOP_REASON)


def assert_gap_free(run: Run) -> None:
    seqs = [event.seq for event in events_of(run)]
    assert seqs == list(range(1, len(seqs) + 1))


def switch(key: str, enabled: bool, capture: Any) -> None:
    with capture(execute=True):  # a toggle's cache is published on commit
        FeatureToggle.objects.update_or_create(key=key, defaults={"enabled": enabled})


# -- tools the tests register -----------------------------------------------------------------

ANY_ARGUMENTS: dict[str, Any] = {"type": "object", "properties": {}}


def _failing_connection() -> tools.Handler:
    attempts = itertools.count(1)

    def connect(arguments: dict[str, Any], context: tools.ToolContext) -> Any:
        n = next(attempts)
        raise ConnectionError(f"connection to 10.0.0.{n}:5432 refused after {n * 130} ms")

    return connect


@pytest.fixture
def scripted_tools() -> Iterator[None]:
    """Three safe tools for scripted models to call:

    - `next_page`: a result that changes at every call (progress, whatever the arguments);
    - `same_answer`: always the same result (no progress, whatever the arguments);
    - `flaky`: fails the same way every time, with different numbers in the error.
    """
    pages = itertools.count(1)
    registered = [
        tools.Tool(
            "next_page", "The next page.", ANY_ARGUMENTS, lambda a, c: {"page": next(pages)}
        ),
        tools.Tool("same_answer", "Always the same.", ANY_ARGUMENTS, lambda a, c: {"ok": 1}),
        tools.Tool("flaky", "Fails.", ANY_ARGUMENTS, _failing_connection()),
    ]
    for tool in registered:
        tools.register(tool)
    yield
    for tool in registered:
        tools.unregister(tool.name)
