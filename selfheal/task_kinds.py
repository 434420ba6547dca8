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

Some work has no machine to do it: a to-do asked for in chat, an error or a code
finding to fix. Its kind is declared a **person's kind** (`declare_person_kind`), with
what it waits for. No worker claims it, the diagnosis and the unblock router do not
count it as stuck, and a person marks it done (or cancels it) on the Engine page.
Every kind the product creates is one or the other (a test holds the product to it).
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
_person_kinds: dict[str, str] = {}


def register_kind(kind: str, handler: Handler) -> None:
    """Let the built-in worker execute tasks of `kind` with `handler` (replacing any)."""
    if not kind.strip():
        raise ValueError("A task kind needs a name.")
    _kinds[kind] = handler


def handler_for(kind: str) -> Handler | None:
    return _kinds.get(kind)


def known_kinds() -> list[str]:
    """The kinds a worker executes (a person's kinds are not among them)."""
    return sorted(_kinds)


def declare_person_kind(kind: str, waits_for: str) -> None:
    """Tasks of `kind` are a person's to-do: no worker claims them; `waits_for` says
    who, in the words the task shows ("a person to fix the code")."""
    if not kind.strip() or not waits_for.strip():
        raise ValueError("A person's kind needs a name and what it waits for.")
    _person_kinds[kind] = waits_for


def person_kinds() -> list[str]:
    return sorted(_person_kinds)


def is_person_kind(kind: str) -> bool:
    return kind in _person_kinds


def has_a_doer(kind: str) -> bool:
    """A worker here executes the kind, or a person is declared to do it."""
    return kind in _kinds or kind in _person_kinds


def waiting_for(kind: str, required_capabilities: list[str] | None = None) -> str:
    """Who a pending task of `kind` waits for, in words."""
    if kind in _person_kinds:
        return _person_kinds[kind]
    needs = ", ".join(required_capabilities or [])
    with_capabilities = f" with capabilities {needs}" if needs else ""
    if kind in _kinds:
        return f"a worker{with_capabilities} (the built-in worker runs {kind})"
    return f"an external worker that executes {kind}{with_capabilities}"


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
