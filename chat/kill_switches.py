"""The toggles that keep agent runs from working: runs themselves, and the routing
operation every model call of a run goes through."""

from __future__ import annotations

from controlplane.models import toggles_enabled

OPERATION = "agent"  # the routing operation every model call of a run goes through
RUNS_TOGGLE = "chat.runs.enabled"
OPERATION_TOGGLE = f"operation.{OPERATION}.enabled"  # routing's switch of that operation


def kill_switch_off() -> str:
    """The toggle that keeps runs from working, if one is off ("" if none). Read from
    the same cache the loop and routing read, so a run refused up front is one that
    would have stopped at once."""
    states = toggles_enabled({RUNS_TOGGLE: True, OPERATION_TOGGLE: True})
    return next((key for key, on in states.items() if not on), "")
