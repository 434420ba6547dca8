"""`bin/manage bench_diagnose`: how long the diagnosis takes on a large queue.

Creates `--tasks` tasks (bulk_create; mixed statuses, ages up to 48 hours) and
`--workers` workers in the configured database inside one transaction, times the
diagnose playbook `--runs` times (p50 and max, and each check's p50), and rolls the
transaction back, so nothing it created is left behind and no other process (a
worker, auto-heal) ever sees the benchmark's rows. Target: under 2 seconds.
"""

from __future__ import annotations

import random
import secrets
import time
from datetime import timedelta
from statistics import median
from typing import Any

from django.core.management.base import CommandError
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from benchmarks.harness import Benchmark, describe_database
from selfheal.models import PlaybookExecution, Task, TaskStatus, Worker
from selfheal.playbooks import run_playbook

TARGET_SECONDS = 2.0
KIND = "bench.diagnose"
AGE_BUCKETS = 48  # one per hour of age
# (status, share): most of a real queue's history is finished work.
STATUS_MIX = [
    (TaskStatus.COMPLETED, 0.60),
    (TaskStatus.FAILED, 0.08),
    (TaskStatus.CANCELLED, 0.04),
    (TaskStatus.PENDING, 0.15),
    (TaskStatus.RUNNING, 0.06),
    (TaskStatus.BLOCKED, 0.04),
    (TaskStatus.WAITING_APPROVAL, 0.03),
]
FINISHED = {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED}


class DiagnoseBenchmark(Benchmark):
    """`bin/manage bench_diagnose` (its arguments are parsed there), writing to `stdout`."""

    def run(self, **options: Any) -> None:
        tasks, workers, runs = options["tasks"], options["workers"], options["runs"]
        if tasks < 0 or workers < 0 or runs < 1:
            raise CommandError("--tasks and --workers must be >= 0 and --runs >= 1.")
        rng = random.Random(options["seed"])
        self.stdout.write(
            f"bench_diagnose: {tasks:,} tasks (mixed statuses, ages up to {AGE_BUCKETS} h), "
            f"{workers} workers, {runs} timed runs"
        )
        self.stdout.write(f"Database: {describe_database()}")
        with transaction.atomic():
            started = time.perf_counter()
            worker_ids = create_workers(workers, rng)
            create_tasks(tasks, worker_ids, rng)
            if connection.vendor == "postgresql":
                # Planner statistics as a settled table would have them (ANALYZE runs
                # in the transaction and is rolled back with it).
                with connection.cursor() as cursor:
                    cursor.execute(f"ANALYZE {Task._meta.db_table}")
                    cursor.execute(f"ANALYZE {Worker._meta.db_table}")
            self.stdout.write(
                f"Setup: {Task.objects.count():,} tasks and {Worker.objects.count()} workers "
                f"in the database ({time.perf_counter() - started:.1f} s)"
            )
            totals, per_check, executions = self.time_runs(runs)
            transaction.set_rollback(True)
        last = executions[-1]
        self.stdout.write("Checks (p50 ms, last run's severity and summary):")
        for name, samples in per_check.items():
            finding = next(f for f in last.findings if f["check"] == name)
            self.stdout.write(
                f"  {name:17} {median(samples):8.1f} ms  {finding['severity']:8} "
                f"{finding['summary']}"
            )
        p50, worst = median(totals), max(totals)
        self.stdout.write(
            f"Diagnosis (run_playbook('diagnose'), recorded): p50 {p50 * 1000:.0f} ms  "
            f"max {worst * 1000:.0f} ms  over {runs} runs"
        )
        verdict = "met" if worst < TARGET_SECONDS else "MISSED"
        self.stdout.write(
            f"Target under {TARGET_SECONDS:.0f} seconds: {verdict} (max {worst:.3f} s)"
        )
        self.stdout.write(
            "Cleanup: everything was created in one transaction, rolled back; "
            f"{Task.objects.filter(kind=KIND).count()} benchmark tasks remain."
        )

    def time_runs(
        self, runs: int
    ) -> tuple[list[float], dict[str, list[float]], list[PlaybookExecution]]:
        totals: list[float] = []
        per_check: dict[str, list[float]] = {}
        executions = []
        for _ in range(runs):
            started = time.perf_counter()
            execution = run_playbook("diagnose", trigger=PlaybookExecution.Trigger.COMMAND)
            totals.append(time.perf_counter() - started)
            executions.append(execution)
            if execution.status != PlaybookExecution.Status.SUCCEEDED:
                raise CommandError(f"The diagnosis failed: {execution.error}")
            for finding in execution.findings:
                per_check.setdefault(finding["check"], []).append(
                    finding["evidence"].get("check_ms", 0.0)
                )
        return totals, per_check, executions


def create_workers(count: int, rng: random.Random) -> list[int]:
    now = timezone.now()
    rows = []
    for n in range(count):
        silent = rng.random() < 0.1
        rows.append(
            Worker(
                name=f"bench-diagnose-{n}-{secrets.token_hex(3)}",
                capabilities=["bench"],
                status=Worker.Status.ONLINE,
                last_heartbeat=now - timedelta(seconds=600 if silent else rng.randint(0, 10)),
                token_lookup=secrets.token_hex(6),
                token_hash=secrets.token_hex(32),
            )
        )
    # bulk_create on purpose: benchmark rows, rolled back, need no audit events.
    return [w.pk for w in Worker.objects.bulk_create(rows, batch_size=1000)]


def create_tasks(count: int, worker_ids: list[int], rng: random.Random) -> None:
    now = timezone.now()
    statuses = [status for status, _ in STATUS_MIX]
    weights = [share for _, share in STATUS_MIX]
    batch: list[Task] = []
    for n in range(count):
        status = rng.choices(statuses, weights)[0]
        running = status == TaskStatus.RUNNING
        batch.append(
            Task(
                title=f"bench task {n}",
                kind=KIND,
                # Nobody can claim these: no worker has this capability.
                required_capabilities=["bench.never"],
                priority=rng.randint(0, 9),
                status=status,
                payload={"bucket": n % AGE_BUCKETS},
                attempts=1 if running or status in FINISHED else 0,
                lease_worker_id=rng.choice(worker_ids) if running and worker_ids else None,
                lease_expires_at=now + timedelta(seconds=rng.randint(-600, 600))
                if running
                else None,
                blocked_reason="bench" if status == TaskStatus.BLOCKED else "",
            )
        )
        if len(batch) == 5000:
            Task.objects.bulk_create(batch)
            batch = []
    if batch:
        Task.objects.bulk_create(batch)
    # created_at is set on insert: age the rows by bucket, one UPDATE per hour of age.
    for bucket in range(AGE_BUCKETS):
        created = now - timedelta(hours=bucket, minutes=rng.randint(0, 59))
        rows = Task.objects.filter(kind=KIND, payload__bucket=bucket)
        rows.update(created_at=created)
        rows.filter(status__in=FINISHED).update(finished_at=F("created_at") + timedelta(minutes=5))
