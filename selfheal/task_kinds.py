"""The task kinds the built-in worker can execute, and the handlers that do them.

A part of the product that creates tasks for the built-in worker registers a
handler for their kind (`register_kind("playbook.run", run_playbook)`), typically
from its `AppConfig.ready()`. The worker claims only tasks of registered kinds.

A handler gets a `TaskContext` and returns a JSON-serializable result (or None). It
runs in a thread of its own while the worker extends the lease; when the worker
gives the task up (the lease was lost, or it is shutting down and the grace period
is over) `context.cancelled` is set, and a long handler should stop at its next
step. Raising `PermanentFailure` fails the task for good; any other exception is a
retryable failure.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SLEEP_LIMIT_SECONDS = 300.0


class PermanentFailure(Exception):
    """The task cannot succeed by trying again; its message says why."""


@dataclass(frozen=True)
class TaskContext:
    task_id: int
    kind: str
    title: str
    payload: dict[str, Any]
    attempt: int
    cancelled: threading.Event = field(default_factory=threading.Event)


Handler = Callable[[TaskContext], Any]

_kinds: dict[str, Handler] = {}


def register_kind(kind: str, handler: Handler) -> None:
    """Let the built-in worker execute tasks of `kind` with `handler` (replacing any)."""
    if not kind.strip():
        raise ValueError("A task kind needs a name.")
    _kinds[kind] = handler


def handler_for(kind: str) -> Handler | None:
    return _kinds.get(kind)


def known_kinds() -> list[str]:
    return sorted(_kinds)


# -- built-in kinds, to check that workers work end to end ---------------------------


def noop(context: TaskContext) -> dict[str, Any]:
    return {"ok": True}


def echo(context: TaskContext) -> dict[str, Any]:
    return {"echo": context.payload}


def sleep(context: TaskContext) -> dict[str, Any]:
    """Take `payload["seconds"]` (at most 300) unless the task is given up first."""
    try:
        seconds = float(context.payload.get("seconds", 1))
    except (TypeError, ValueError):
        raise PermanentFailure("payload 'seconds' must be a number.") from None
    seconds = min(max(seconds, 0.0), SLEEP_LIMIT_SECONDS)
    given_up = context.cancelled.wait(seconds)
    return {"slept_seconds": seconds, "cancelled": given_up}


register_kind("noop", noop)
register_kind("echo", echo)
register_kind("sleep", sleep)
