"""One way to run background work, whatever the mode.

`enqueue()` hands a Celery task to the broker when one is configured, and to an
in-process thread pool otherwise. Work is always enqueued on transaction commit, so
a task never looks for a row that its caller has not committed yet. Task bodies are
idempotent: a task may run twice (Celery `acks_late`, a retry sweep), never wrongly.

The in-process scheduler ticks the same `CELERY_BEAT_SCHEDULE` that Celery beat
reads in scale mode.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from celery import Task
from celery.schedules import maybe_schedule
from django.conf import settings
from django.db import close_old_connections, connections, transaction

log = logging.getLogger(__name__)

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_stopping = threading.Event()


def broker_configured() -> bool:
    return bool(settings.CELERY_BROKER_URL)


def enqueue(task: Task, *args: Any, countdown: float | None = None, **kwargs: Any) -> None:
    """Run `task(*args, **kwargs)` in the background once the current transaction commits."""
    transaction.on_commit(lambda: _dispatch(task, args, kwargs, countdown))


def _dispatch(task: Task, args: tuple, kwargs: dict, countdown: float | None) -> None:
    if settings.BACKGROUND_EAGER:
        _run_in_process(task, args, kwargs, pool_thread=False)
    elif broker_configured():
        task.apply_async(args=args, kwargs=kwargs, countdown=countdown)
    elif countdown:
        _delayed().schedule(time.monotonic() + countdown, lambda: _submit(task, args, kwargs))
    else:
        _submit(task, args, kwargs)


def _submit(task: Task, args: tuple, kwargs: dict) -> None:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=settings.BACKGROUND_THREADS, thread_name_prefix="background"
            )
    _pool.submit(_run_in_process, task, args, kwargs, pool_thread=True)


def _run_in_process(task: Task, args: tuple, kwargs: dict, *, pool_thread: bool) -> None:
    try:
        task.run(*args, **kwargs)
    except Exception:
        log.exception("background task %s failed", task.name)
        if not pool_thread:
            raise
    finally:
        if pool_thread:
            # Pool threads outlive requests: give their connections back.
            connections.close_all()


class _DelayedQueue:
    """Runs callables at a monotonic deadline, for countdowns without a broker.

    Lost on restart by design: whatever is delayed (a notification retry) is also
    found again by a periodic sweep that reads the database.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._counter = 0
        self._wake = threading.Condition()
        threading.Thread(target=self._loop, name="background-delayed", daemon=True).start()

    def schedule(self, deadline: float, job: Callable[[], None]) -> None:
        with self._wake:
            self._counter += 1
            heapq.heappush(self._heap, (deadline, self._counter, job))
            self._wake.notify()

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._wake.wait(timeout)
                _, _, job = heapq.heappop(self._heap)
            job()


_delayed_queue: _DelayedQueue | None = None


def _delayed() -> _DelayedQueue:
    global _delayed_queue
    with _pool_lock:
        if _delayed_queue is None:
            _delayed_queue = _DelayedQueue()
    return _delayed_queue


class EmbeddedScheduler:
    """Ticks `CELERY_BEAT_SCHEDULE` in-process, as Celery beat does in scale mode."""

    def __init__(self, schedule: dict[str, dict[str, Any]], tick_seconds: float = 1.0) -> None:
        from controlplane.celery import app

        app.loader.import_default_modules()  # registers every app's tasks, as a worker does
        self.entries = {
            name: (entry["task"], maybe_schedule(entry["schedule"], app=app), entry.get("args", ()))
            for name, entry in schedule.items()
        }
        self.last_run: dict[str, datetime] = {}
        self.tick_seconds = tick_seconds
        self._stop = threading.Event()

    def due_tasks(self, now: datetime) -> list[tuple[str, tuple]]:
        """The tasks due at `now`, marking them as run. The first tick runs every entry."""
        due = []
        for name, (task_name, schedule, args) in self.entries.items():
            last = self.last_run.get(name)
            if last is None or schedule.is_due(last).is_due:
                self.last_run[name] = now
                due.append((task_name, tuple(args)))
        return due

    def tick(self) -> None:
        from controlplane.celery import app

        close_old_connections()
        for task_name, args in self.due_tasks(datetime.now(UTC)):
            try:
                _submit(app.tasks[task_name], args, {})
            except RuntimeError:
                # The pool is shut down: the process is exiting (Ctrl-C, SIGTERM), and
                # Python's exit shuts pools before it waits for their last tasks. No more
                # ticks; the next start runs every entry at its first tick.
                log.info("the in-process pool takes no more work: the scheduler stops")
                self.stop()
                return

    def run_forever(self) -> None:
        while not self._stop.wait(self.tick_seconds):
            try:
                self.tick()
            except Exception:
                log.exception("embedded scheduler tick failed")

    def start(self) -> None:
        threading.Thread(target=self.run_forever, name="embedded-scheduler", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()


_scheduler: EmbeddedScheduler | None = None


def start_embedded_scheduler() -> EmbeddedScheduler:
    global _scheduler
    scheduler = _scheduler = EmbeddedScheduler(settings.CELERY_BEAT_SCHEDULE)
    scheduler.start()
    log.info("embedded scheduler started with %d entries", len(scheduler.entries))
    return scheduler


def stopping() -> bool:
    """True once the server in this process has stopped (`stop_in_process_work`): long
    work still running (a code scan) ends at its next step rather than hold up the
    exit, and what fails from here on is the exit's doing, not the work's."""
    return _stopping.is_set()


def stop_in_process_work() -> None:
    """When the server in this process has stopped: no more scheduler ticks, and work
    not started yet dropped (the periodic sweeps find it again after a restart). Tasks
    already running finish before the process exits, long ones at their next step
    (`stopping`); without this, the scheduler kept submitting to a pool the exit had
    shut down, logging an error every second."""
    _stopping.set()
    if _scheduler is not None:
        _scheduler.stop()
    with _pool_lock:
        if _pool is not None:
            _pool.shutdown(wait=False, cancel_futures=True)
