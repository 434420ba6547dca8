"""The built-in worker: heartbeat, claim, execute, report; one loop for both ways of
reaching the engine.

`InProcessEngine` calls `selfheal.engine` directly (the worker runs next to the
database); `HttpEngine` calls the worker HTTP API of a running server (which calls
the same functions). `WorkerLoop` does not know which one it has.

The loop claims only the kinds in `selfheal.task_kinds`. A handler runs in a thread
of its own while the loop keeps the lease extended and the heartbeat going. Setting
`stop` makes the loop stop claiming, finish the current task (for up to
`grace_seconds`, then hand it back) and mark the worker offline; setting `hand_back`
gives the current task back at once.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connections

from selfheal import engine, storable, task_kinds
from selfheal.engine_errors import EngineError, WorkerOffline
from selfheal.models import Task, Worker

log = logging.getLogger(__name__)

VERSION = "builtin-0.1"
HTTP_TRIES = 3


class WorkerRefused(Exception):
    """The engine does not accept this worker (wrong or revoked token)."""


class EngineUnavailable(Exception):
    """The engine could not be reached; the loop tries again later."""


class MarkedOffline(Exception):
    """The engine marked this worker offline (it missed its heartbeats): it claims
    again after its next heartbeat."""


@dataclass(frozen=True)
class Assignment:
    """A claimed task as the worker holds it: what to do, and the lease to report on."""

    task_id: int
    kind: str
    title: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    fencing_token: int
    lease_seconds: float

    @classmethod
    def of_task(cls, task: Task) -> Assignment:
        return cls(
            task_id=task.pk,
            kind=task.kind,
            title=task.title,
            payload=task.payload or {},
            attempt=task.attempts,
            max_attempts=task.max_attempts,
            fencing_token=task.fencing_token,
            lease_seconds=float(settings.LEASE_SECONDS),
        )

    @classmethod
    def of_json(cls, body: dict[str, Any]) -> Assignment:
        return cls(
            task_id=body["id"],
            kind=body["kind"],
            title=body["title"],
            payload=body.get("payload") or {},
            attempt=body["attempts"],
            max_attempts=body["max_attempts"],
            fencing_token=body["fencing_token"],
            lease_seconds=float(body["lease_seconds"]),
        )


class EngineClient(Protocol):
    """How the loop reaches the engine. Reports return False when the lease is lost."""

    name: str

    def heartbeat(self, capabilities: list[str], version: str) -> float: ...
    def claim(self, kinds: list[str]) -> Assignment | None: ...
    def extend(self, assignment: Assignment) -> bool: ...
    def complete(self, assignment: Assignment, result: Any) -> bool: ...
    def fail(self, assignment: Assignment, error: str, retryable: bool) -> bool: ...
    def release(self, assignment: Assignment, reason: str) -> bool: ...
    def offline(self, reason: str) -> None: ...


class InProcessEngine:
    """The engine through `selfheal.engine`, on this process's database connection."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.name = worker.name

    def heartbeat(self, capabilities: list[str], version: str) -> float:
        with _database_as_engine():
            close_old_connections()  # a long-lived loop outlives CONN_MAX_AGE
            self.worker.refresh_from_db()
            if self.worker.revoked_at is not None:
                raise WorkerRefused(f"Worker {self.name}'s token was revoked.")
            engine.heartbeat(self.worker, capabilities=capabilities, version=version)
        return float(settings.HEARTBEAT_SECONDS)

    def claim(self, kinds: list[str]) -> Assignment | None:
        with _database_as_engine():
            close_old_connections()
            try:
                task = engine.claim(self.worker, kinds=kinds)
            except WorkerOffline as exc:
                raise MarkedOffline(str(exc)) from exc
        return Assignment.of_task(task) if task is not None else None

    def extend(self, assignment: Assignment) -> bool:
        return self._report(engine.extend_lease, assignment)

    def complete(self, assignment: Assignment, result: Any) -> bool:
        return self._report(engine.complete, assignment, result)

    def fail(self, assignment: Assignment, error: str, retryable: bool) -> bool:
        return self._report(engine.fail, assignment, error, retryable=retryable)

    def release(self, assignment: Assignment, reason: str) -> bool:
        return self._report(engine.release, assignment, reason)

    def offline(self, reason: str) -> None:
        with _database_as_engine():
            engine.go_offline(self.worker, reason)

    def _report(
        self, report: Callable[..., Any], assignment: Assignment, *args: Any, **kw: Any
    ) -> bool:
        try:
            with _database_as_engine():
                report(self.worker, assignment.task_id, assignment.fencing_token, *args, **kw)
        except EngineError as exc:
            log.warning("%s", exc)
            return False
        return True


@contextmanager
def _database_as_engine() -> Iterator[None]:
    """The database is this client's engine: when it is down, the engine is."""
    try:
        yield
    except DatabaseError as exc:
        close_old_connections()
        raise EngineUnavailable(f"database error: {exc}") from exc


class HttpEngine:
    """The engine through the worker HTTP API of a running server."""

    def __init__(self, server: str, token: str, *, timeout: float = 10.0) -> None:
        base = server.rstrip("/")
        if not base.endswith("/selfheal/api"):
            base += "/selfheal/api"
        self.http = httpx.Client(
            base_url=base + "/",
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )
        self.name = "?"

    def heartbeat(self, capabilities: list[str], version: str) -> float:
        body = self._post("heartbeat", {"capabilities": capabilities, "version": version}).json()
        self.name = body["worker"]
        return float(body["heartbeat_seconds"])

    def claim(self, kinds: list[str]) -> Assignment | None:
        response = self._post("claim", {"kinds": kinds})
        if response.status_code == 204:
            return None
        if response.status_code == 409:
            raise MarkedOffline(_message(response))
        return Assignment.of_json(response.json()["task"])

    def extend(self, assignment: Assignment) -> bool:
        return self._report(assignment, "extend", {})

    def complete(self, assignment: Assignment, result: Any) -> bool:
        return self._report(assignment, "complete", {"result": result})

    def fail(self, assignment: Assignment, error: str, retryable: bool) -> bool:
        return self._report(assignment, "fail", {"error": error, "retryable": retryable})

    def release(self, assignment: Assignment, reason: str) -> bool:
        return self._report(assignment, "release", {"reason": reason})

    def offline(self, reason: str) -> None:
        self._post("offline", {"reason": reason})

    def close(self) -> None:
        self.http.close()

    def _report(self, assignment: Assignment, action: str, body: dict[str, Any]) -> bool:
        response = self._post(
            f"tasks/{assignment.task_id}/{action}",
            {"fencing_token": assignment.fencing_token, **body},
        )
        if response.status_code in (404, 409):
            log.warning("%s", _message(response))
            return False
        return True

    def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        problem = ""
        for attempt in range(HTTP_TRIES):
            if attempt:
                time.sleep(0.5 * 2**attempt)
            try:
                response = self.http.post(path, json=body)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code == 401:
                raise WorkerRefused(_message(response))
            if response.status_code >= 500:
                problem = f"HTTP {response.status_code}"
                continue
            if response.status_code == 400:
                raise EngineUnavailable(f"The server refused the request: {_message(response)}")
            return response
        raise EngineUnavailable(f"{self.http.base_url}{path} did not answer: {problem}")


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"


# -- the loop -------------------------------------------------------------------------


@dataclass
class Outcome:
    result: Any = None
    error: str | None = None
    retryable: bool = True


@dataclass
class Tally:
    completed: int = 0
    failed: int = 0
    handed_back: int = 0
    lost: int = 0


@dataclass
class WorkerLoop:
    engine: EngineClient
    capabilities: list[str]
    kinds: dict[str, task_kinds.Handler] | None = None
    poll_seconds: float = 1.0
    grace_seconds: float = 30.0
    say: Callable[[str], None] = log.info
    stop: threading.Event = field(default_factory=threading.Event)
    hand_back: threading.Event = field(default_factory=threading.Event)
    tally: Tally = field(default_factory=Tally)

    def __post_init__(self) -> None:
        if self.kinds is None:
            known = task_kinds.known_kinds()
            self.kinds = {kind: h for kind in known if (h := task_kinds.handler_for(kind))}
        self.heartbeat_seconds = float(settings.HEARTBEAT_SECONDS)
        self.next_beat = 0.0
        self.online = False

    def run(self) -> Tally:
        """Until `stop`: claim and execute. Then offline. Raises WorkerRefused."""
        try:
            while not self.stop.is_set():
                if not self.step():
                    self.stop.wait(self.poll_seconds)
        finally:
            self.go_offline()
        return self.tally

    def step(self) -> bool:
        """Claim and execute one task; False when there was none (or no engine)."""
        try:
            self.beat()
            assignment = self.engine.claim(sorted(self.kinds or {}))
        except EngineUnavailable as exc:
            self.say(f"The engine is unavailable ({exc}); trying again.")
            return False
        except MarkedOffline as exc:
            self.say(f"{exc} Beating again.")
            self.next_beat = 0.0
            return False
        if assignment is None:
            return False
        self.execute(assignment)
        return True

    def beat(self) -> None:
        if time.monotonic() >= self.next_beat:
            self.heartbeat_seconds = self.engine.heartbeat(self.capabilities, VERSION)
            self.next_beat = time.monotonic() + self.heartbeat_seconds
            if not self.online:
                self.online = True
                kinds = ", ".join(self.kinds or {})
                self.say(f"Worker {self.engine.name} is online; it executes {kinds}.")

    def go_offline(self) -> None:
        try:
            self.engine.offline("the worker stopped.")
            self.say(f"Worker {self.engine.name} is offline.")
        except (EngineUnavailable, WorkerRefused) as exc:
            self.say(f"Could not mark the worker offline: {exc}")

    # -- one task ---------------------------------------------------------------

    def execute(self, assignment: Assignment) -> None:
        self.say(
            f"Claimed task #{assignment.task_id} ({assignment.kind}) “{assignment.title}”, "
            f"attempt {assignment.attempt} of {assignment.max_attempts}."
        )
        handler = (self.kinds or {}).get(assignment.kind)
        if handler is None:
            self._fail(assignment, Outcome(error=f"No handler for kind '{assignment.kind}'."))
            return
        context = task_kinds.TaskContext(
            task_id=assignment.task_id,
            kind=assignment.kind,
            title=assignment.title,
            payload=assignment.payload,
            attempt=assignment.attempt,
        )
        outcome = Outcome()
        runner = threading.Thread(
            target=_run_handler,
            args=(handler, context, outcome),
            name=f"task-{assignment.task_id}",
            daemon=True,  # a handler that ignores `cancelled` must not keep the process
        )
        began = time.monotonic()
        runner.start()
        if not self._watch(runner, assignment, context):
            return
        if outcome.error is None:
            if self._report(self.engine.complete, assignment, outcome.result):
                self.tally.completed += 1
                self.say(
                    f"Completed task #{assignment.task_id} in {time.monotonic() - began:.2f} s."
                )
        else:
            self._fail(assignment, outcome)

    def _watch(
        self, runner: threading.Thread, assignment: Assignment, context: task_kinds.TaskContext
    ) -> bool:
        """Extend the lease and keep beating while the handler runs; hand the task
        back when told to or when the grace period is over. True if it finished."""
        extend_every = max(assignment.lease_seconds / 3, 0.05)
        next_extend = time.monotonic() + extend_every
        deadline: float | None = None
        while runner.is_alive():
            runner.join(timeout=min(0.1, extend_every))
            now = time.monotonic()
            if self.stop.is_set() and deadline is None:
                deadline = now + self.grace_seconds
            if runner.is_alive() and (
                self.hand_back.is_set() or (deadline is not None and now >= deadline)
            ):
                context.cancelled.set()
                self._hand_back(assignment)
                return False
            if runner.is_alive() and now >= next_extend:
                next_extend = now + extend_every
                if not self._report(self.engine.extend, assignment):
                    context.cancelled.set()
                    self.tally.lost += 1
                    self.say(f"Lost the lease of task #{assignment.task_id}; gave it up.")
                    return False
            self._quiet_beat()
        return True

    def _quiet_beat(self) -> None:
        try:
            self.beat()
        except EngineUnavailable as exc:
            self.say(f"Heartbeat failed ({exc}).")

    def _hand_back(self, assignment: Assignment) -> None:
        reason = f"Worker {self.engine.name} is stopping; the task did not finish in time."
        if self._report(self.engine.release, assignment, reason):
            self.tally.handed_back += 1
            self.say(f"Handed task #{assignment.task_id} back to the queue.")

    def _fail(self, assignment: Assignment, outcome: Outcome) -> None:
        assert outcome.error is not None
        if self._report(self.engine.fail, assignment, outcome.error, outcome.retryable):
            self.tally.failed += 1
            self.say(f"Task #{assignment.task_id} failed: {outcome.error}")

    def _report(self, report: Callable[..., bool], assignment: Assignment, *args: Any) -> bool:
        """A report under the lease; False (and said) when refused or unreachable:
        then the lease expires and the task runs again elsewhere."""
        try:
            accepted = report(assignment, *args)
        except EngineUnavailable as exc:
            self.say(f"Could not report on task #{assignment.task_id}: {exc}")
            return False
        if not accepted:
            self.say(f"The engine refused the report on task #{assignment.task_id}.")
        return accepted


def _run_handler(
    handler: task_kinds.Handler, context: task_kinds.TaskContext, outcome: Outcome
) -> None:
    try:
        result = handler(context)
    except task_kinds.PermanentFailure as exc:
        outcome.error, outcome.retryable = str(exc) or type(exc).__name__, False
    except Exception as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
        log.exception("task #%s (%s) failed", context.task_id, context.kind)
    else:
        # What cannot be stored fails now, not at report time (where it would be
        # refused and the task would run again).
        try:
            json.dumps(result)
        except (TypeError, ValueError) as exc:
            outcome.error, outcome.retryable = f"The result is not JSON: {exc}", False
        else:
            if (problem := storable.problem_in(result, "result")) is not None:
                outcome.error, outcome.retryable = f"The result cannot be stored: {problem}", False
            else:
                outcome.result = result
    finally:
        connections.close_all()  # this thread's own connections, if the handler used any
