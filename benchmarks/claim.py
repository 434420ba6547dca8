"""`bin/manage bench_claim [--tasks 2000] [--workers 8]`: claim throughput.

Tasks claimed and completed per second by `--workers` concurrent workers, two ways:
through the worker HTTP API of a real daphne process (on the configured database
and cache), and directly through the model layer (`selfheal.engine`, one thread and
database connection per worker). Each way gets `--tasks` fresh tasks; afterwards it
checks that every task was claimed once and completed once.

The benchmark's rows are its own: tasks of kind `bench.claim` needing a capability
that only its workers (`bench-claim-<run>-<n>`) have, and the workers claim only
that kind, so real work and real workers are never touched. Tasks and workers are
removed at the end (also those of an interrupted run); the audit events of their
claims and completions stay, as the audit trail is append-only. The server is
stopped on exit, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from benchmarks.harness import (
    Benchmark,
    DaphneProcess,
    Latencies,
    check_database_is_shareable,
    describe_cache,
    describe_database,
    interrupt_on_sigterm,
    wait_until_ready,
)
from controlplane.models import AuditEvent
from selfheal import engine
from selfheal.models import Task, TaskStatus, Worker

KIND = "bench.claim"
WORKER_PREFIX = "bench-claim-"


class ClaimBenchmark(Benchmark):
    """`bin/manage bench_claim` (its arguments are parsed there), writing to `stdout`."""

    def run(self, **options: Any) -> None:
        count, workers = options["tasks"], options["workers"]
        if count < 1 or workers < 1:
            raise CommandError("--tasks and --workers must be at least 1.")
        check_database_is_shareable("server process")
        self.stdout.write(
            f"bench_claim: {count} tasks each way, {workers} concurrent workers, "
            "claim then complete each task"
        )
        database = describe_database()
        if connection.vendor == "sqlite":
            database += ": claims are serialized by its write lock"
        self.stdout.write(f"Database: {database}")
        self.stdout.write(f"Cache: {describe_cache()}")
        tag = secrets.token_hex(3)
        interrupted = False
        server = DaphneProcess(log_prefix="bench-claim-daphne-")
        with interrupt_on_sigterm(), server:
            try:
                self._remove_rows(leftovers=True)
                crew = _register_workers(tag, workers)
                url = server.start()
                _wait_until_ready(server, crew[0][1])
                self.stdout.write(f"Server: daphne on {url} (pid {server.pid}), one process")
                self._report("Through the HTTP API", _run(count, tag, crew, _http_worker(url)))
                self._report("Through the model layer", _run(count, tag, crew, _model_worker))
            except KeyboardInterrupt:
                interrupted = True
                self.stdout.write("Interrupted: stopping the server and cleaning up.")
            finally:
                server.stop()
                self._remove_rows()
        if interrupted:
            raise CommandError("Interrupted.")

    def _report(self, label: str, run: Run) -> None:
        self.stdout.write(
            f"{label}: {run.done} of {run.tasks} tasks claimed and completed in "
            f"{run.elapsed:.2f} s: {run.per_second:,.0f} tasks/s"
        )
        for step, samples in (("claim", run.claims), ("complete", run.completions)):
            if samples:
                self.stdout.write(f"  {step:<8} {Latencies.of(samples).milliseconds()}")
        verdict = "yes" if run.exactly_once else "NO"
        self.stdout.write(f"  every task claimed once and completed once: {verdict}")
        if run.failures:
            self.stdout.write(f"  {len(run.failures)} failures; first: {run.failures[0]}")

    def _remove_rows(self, *, leftovers: bool = False) -> None:
        tasks, workers = _remove_bench_rows()
        if leftovers and (tasks or workers):
            self.stdout.write(
                f"Removed rows left by an earlier run: {tasks} tasks, {workers} workers."
            )
        elif not leftovers:
            self.stdout.write(
                f"Removed: {tasks} tasks and {workers} workers of this run. Their claims and "
                "completions stay in the audit trail (append-only)."
            )


# -- rows ------------------------------------------------------------------------------


def _register_workers(tag: str, count: int) -> list[tuple[Worker, str]]:
    crew = []
    for number in range(1, count + 1):
        worker, raw = Worker.register(f"{WORKER_PREFIX}{tag}-{number}", [f"bench-{tag}"])
        engine.heartbeat(worker)
        crew.append((worker, raw))
    return crew


def _create_tasks(tag: str, count: int) -> list[int]:
    """Bulk inserts: the benchmark's own rows, not work anyone created."""
    now = timezone.now()
    tasks = Task.objects.bulk_create(
        Task(
            title=f"bench_claim {tag} #{number}",
            kind=KIND,
            priority=number % 3,
            required_capabilities=[f"bench-{tag}"],
            source=Task.Source.SELFHEAL,
            created_at=now,
        )
        for number in range(count)
    )
    return [task.pk for task in tasks]


def _remove_bench_rows() -> tuple[int, int]:
    tasks, _ = Task.objects.filter(kind=KIND).delete()
    workers = 0
    for worker in Worker.objects.filter(name__startswith=WORKER_PREFIX):
        worker.delete()
        workers += 1
    return tasks, workers


# -- the load --------------------------------------------------------------------------


@dataclass
class Run:
    tasks: int
    elapsed: float = 0.0
    done: int = 0
    claims: list[float] = field(default_factory=list)
    completions: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    exactly_once: bool = False

    @property
    def per_second(self) -> float:
        return self.done / self.elapsed if self.elapsed else 0.0


# One worker's loop: claim and complete until nothing is left; returns what it did.
WorkerBody = Callable[[Worker, str, Run, threading.Lock], None]


def _run(count: int, tag: str, crew: list[tuple[Worker, str]], body: WorkerBody) -> Run:
    task_ids = _create_tasks(tag, count)
    run = Run(tasks=count)
    lock = threading.Lock()
    threads = [
        threading.Thread(target=body, args=(worker, raw, run, lock), daemon=True)
        for worker, raw in crew
    ]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.2)
    run.elapsed = time.perf_counter() - began
    run.exactly_once = _each_once(task_ids)
    return run


def _each_once(task_ids: list[int]) -> bool:
    """Completed, claimed exactly once (fencing token 1), one completion audited each."""
    tasks = Task.objects.filter(pk__in=task_ids)
    completed = tasks.filter(status=TaskStatus.COMPLETED, fencing_token=1).count()
    audited = AuditEvent.objects.filter(
        action="task.completed", object_id__in=[str(pk) for pk in task_ids]
    ).count()
    return completed == audited == len(task_ids)


def _http_worker(url: str) -> WorkerBody:
    def body(worker: Worker, raw: str, run: Run, lock: threading.Lock) -> None:
        headers = {"Authorization": f"Bearer {raw}"}
        with httpx.Client(base_url=f"{url}/selfheal/api/", headers=headers, timeout=30) as api:
            while True:
                began = time.perf_counter()
                try:
                    claimed = api.post("claim", json={"kinds": [KIND]})
                    if claimed.status_code == 204:
                        return
                    claimed.raise_for_status()
                    took = time.perf_counter() - began
                    task = claimed.json()["task"]
                    began = time.perf_counter()
                    api.post(
                        f"tasks/{task['id']}/complete",
                        json={"fencing_token": task["fencing_token"], "result": {"ok": True}},
                    ).raise_for_status()
                except httpx.HTTPError as exc:
                    with lock:
                        run.failures.append(f"{type(exc).__name__}: {exc}")
                    return
                with lock:
                    run.claims.append(took)
                    run.completions.append(time.perf_counter() - began)
                    run.done += 1

    return body


def _model_worker(worker: Worker, raw: str, run: Run, lock: threading.Lock) -> None:
    try:
        while True:
            began = time.perf_counter()
            task = engine.claim(worker, kinds=[KIND])
            if task is None:
                return
            took = time.perf_counter() - began
            began = time.perf_counter()
            engine.complete(worker, task.pk, task.fencing_token, {"ok": True})
            with lock:
                run.claims.append(took)
                run.completions.append(time.perf_counter() - began)
                run.done += 1
    except Exception as exc:
        with lock:
            run.failures.append(f"{type(exc).__name__}: {exc}")
    finally:
        connection.close()  # this thread's connection


# -- the server ------------------------------------------------------------------------


def _wait_until_ready(server: DaphneProcess, raw_token: str) -> None:
    """Until the server answers a heartbeat with this run's token: which also proves
    it opened the same database."""
    headers = {"Authorization": f"Bearer {raw_token}"}
    with httpx.Client(timeout=5) as client:

        def answers() -> bool:
            try:
                response = client.post(
                    f"{server.url}/selfheal/api/heartbeat", headers=headers, json={}
                )
            except httpx.HTTPError:
                return False
            if response.status_code == 401:
                raise CommandError(
                    "The server does not know the benchmark's worker: it is not using this "
                    "database."
                )
            return response.status_code == 200

        wait_until_ready(answers, server)
