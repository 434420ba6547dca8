from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import OperationalError
from django.utils import timezone

from selfheal.error_patterns import (
    fix_task_dedupe_key,
    register_error_source,
    unregister_error_source,
)
from selfheal.models import PlaybookExecution, Task, TaskStatus, Worker
from selfheal.playbooks import checks, diagnose, run_playbook
from selfheal.playbooks.checks import (
    CHECKS,
    SystemResources,
    check_completion_rate,
    check_database,
    check_error_patterns,
    check_system_resources,
    check_task_queue,
    check_worker_heartbeats,
)
from selfheal.playbooks.diagnose import diagnose_system

pytestmark = pytest.mark.django_db


@pytest.fixture
def now() -> datetime:
    return timezone.now()


def make_task(
    status: str = TaskStatus.PENDING, *, age: timedelta = timedelta(0), **fields: Any
) -> Task:
    task = Task.objects.create(title=f"{status} task", kind="noop", status=status, **fields)
    Task.objects.filter(pk=task.pk).update(created_at=timezone.now() - age)
    task.refresh_from_db()
    return task


def make_worker(
    name: str, *, heartbeat_age: timedelta | None, status: str = Worker.Status.ONLINE
) -> Worker:
    worker, _ = Worker.register(name, ["noop"])
    Worker._base_manager.filter(pk=worker.pk).update(
        status=status,
        last_heartbeat=None if heartbeat_age is None else timezone.now() - heartbeat_age,
    )
    return worker


class ErrorSource:
    def __init__(self, patterns: list[dict[str, Any]]) -> None:
        self.patterns = patterns
        self.limits: list[int] = []

    def __call__(self, *, limit: int) -> list[dict[str, Any]]:
        self.limits.append(limit)
        return self.patterns[:limit]


@pytest.fixture
def error_source() -> Any:
    source = ErrorSource([])
    register_error_source(source)
    yield source
    unregister_error_source(source)


def pattern(fingerprint: str, count: int) -> dict[str, Any]:
    return {
        "fingerprint": fingerprint,
        "message": f"Error {fingerprint}",
        "count": count,
        "last_seen": timezone.now().isoformat(),
    }


# Database


def test_a_database_that_answers_quickly_is_ok(now):
    finding = check_database(now)
    assert finding.severity == "ok"
    assert finding.evidence["reachable"] == 1
    assert finding.evidence["latency_ms"] >= 0


def test_a_slow_database_is_a_warning_and_a_very_slow_one_critical(now, monkeypatch):
    monkeypatch.setattr(checks, "ping_database", lambda: 120.0)
    assert check_database(now).severity == "warning"
    monkeypatch.setattr(checks, "ping_database", lambda: 900.0)
    finding = check_database(now)
    assert finding.severity == "critical"
    assert finding.evidence["latency_ms"] == 900.0
    assert "database server" in finding.suggested_action


def test_a_database_that_does_not_answer_is_critical(now, monkeypatch):
    def refuse() -> float:
        raise OperationalError("connection refused")

    monkeypatch.setattr(checks, "ping_database", refuse)
    finding = check_database(now)
    assert finding.severity == "critical"
    assert finding.evidence == {"reachable": 0}
    assert "connection refused" in finding.summary


# Worker heartbeats


def test_live_workers_are_ok(now):
    make_worker("alpha", heartbeat_age=timedelta(seconds=5))
    make_task()
    finding = check_worker_heartbeats(now)
    assert finding.severity == "ok"
    assert finding.evidence["live"] == 1
    assert finding.evidence["silent"] == 0


def test_no_workers_and_no_work_is_ok(now):
    finding = check_worker_heartbeats(now)
    assert finding.severity == "ok"
    assert finding.evidence["registered"] == 0


def test_a_silent_worker_not_marked_offline_is_a_warning(now):
    make_worker("alpha", heartbeat_age=timedelta(seconds=5))
    make_worker("beta", heartbeat_age=timedelta(minutes=10))
    finding = check_worker_heartbeats(now)
    assert finding.severity == "warning"
    assert finding.evidence["silent"] == 1
    assert "detect_stuck" in finding.suggested_action


def test_pending_work_with_no_live_worker_is_critical(now):
    make_worker("alpha", heartbeat_age=timedelta(minutes=10), status=Worker.Status.OFFLINE)
    make_task()
    finding = check_worker_heartbeats(now)
    assert finding.severity == "critical"
    assert finding.evidence["live"] == 0
    assert finding.evidence["pending_work"] == 1
    assert "run_worker" in finding.suggested_action
    assert finding.needs_person  # only a person starts a worker


def test_a_revoked_worker_does_not_count(now):
    worker = make_worker("alpha", heartbeat_age=timedelta(seconds=5))
    Worker._base_manager.filter(pk=worker.pk).update(revoked_at=now)
    make_task()
    assert check_worker_heartbeats(now).severity == "critical"


# Task queue


def test_a_fresh_queue_with_nothing_blocked_is_ok(now):
    make_task(age=timedelta(minutes=2))
    make_task(TaskStatus.RUNNING, lease_expires_at=now + timedelta(minutes=1))
    make_task(TaskStatus.COMPLETED, age=timedelta(days=3))
    finding = check_task_queue(now)
    assert finding.severity == "ok"
    assert finding.evidence["pending"] == 1
    assert finding.evidence["running"] == 1
    assert finding.evidence["oldest_pending_age_s"] == pytest.approx(120, abs=5)


def test_an_old_pending_task_is_a_warning_then_critical(now):
    make_task(age=timedelta(minutes=20))
    assert check_task_queue(now).severity == "warning"
    make_task(age=timedelta(hours=2))
    finding = check_task_queue(now)
    assert finding.severity == "critical"
    assert finding.evidence["oldest_pending_age_s"] == pytest.approx(7200, abs=5)
    assert "capabilities" in finding.suggested_action


def test_blocked_tasks_are_a_warning_and_ten_are_critical(now):
    make_task(TaskStatus.BLOCKED)
    finding = check_task_queue(now)
    assert finding.severity == "warning"
    assert finding.evidence["blocked"] == 1
    assert "repair" in finding.suggested_action
    assert not finding.needs_person  # the repair playbook resets them
    for _ in range(9):
        make_task(TaskStatus.BLOCKED)
    assert check_task_queue(now).severity == "critical"


def test_tasks_running_past_their_lease_are_counted_as_stuck(now):
    make_task(TaskStatus.RUNNING, lease_expires_at=now - timedelta(minutes=1))
    make_task(TaskStatus.RUNNING, lease_expires_at=now + timedelta(minutes=1))
    finding = check_task_queue(now)
    assert finding.severity == "warning"
    assert finding.evidence["stuck_running"] == 1
    assert finding.evidence["running"] == 2


def test_many_tasks_waiting_for_approval_are_a_warning(now):
    for _ in range(checks.QUEUE_WAITING_APPROVAL_WARNING):
        make_task(TaskStatus.WAITING_APPROVAL)
    finding = check_task_queue(now)
    assert finding.severity == "warning"
    assert finding.evidence["waiting_approval"] == checks.QUEUE_WAITING_APPROVAL_WARNING
    assert "Approvals" in finding.suggested_action
    assert finding.needs_person


def test_a_queue_finding_needs_a_person_when_any_of_its_problems_does(now):
    make_task(TaskStatus.BLOCKED)
    for _ in range(checks.QUEUE_WAITING_APPROVAL_WARNING):
        make_task(TaskStatus.WAITING_APPROVAL)
    finding = check_task_queue(now)
    assert finding.needs_person
    assert finding.as_record()["needs_person"] is True


# Error patterns


def test_with_no_error_source_registered_the_check_says_so(now, monkeypatch):
    # The health monitor registers one at start: as if it were not installed.
    monkeypatch.setattr("selfheal.error_patterns._sources", [])
    finding = check_error_patterns(now)
    assert finding.severity == "ok"
    assert finding.evidence == {"sources": 0, "patterns": 0}
    assert "No error source is registered" in finding.summary


def test_rare_error_patterns_are_ok(now, error_source):
    error_source.patterns = [pattern("a", 3), pattern("b", 1)]
    finding = check_error_patterns(now)
    assert finding.severity == "ok"
    assert finding.evidence["patterns"] == 2
    assert error_source.limits == [checks.ERROR_PATTERN_LIMIT]


def test_frequent_error_patterns_are_a_warning_then_critical(now, error_source):
    error_source.patterns = [pattern("a", 40), pattern("b", 12), pattern("c", 2)]
    finding = check_error_patterns(now)
    assert finding.severity == "warning"
    assert finding.evidence["significant"] == 2
    assert finding.evidence["without_fix_task"] == 2
    assert finding.evidence["top"][0]["fingerprint"] == "a"
    assert "open fix tasks for 2" in finding.suggested_action
    error_source.patterns = [pattern("a", 400)]
    assert check_error_patterns(now).severity == "critical"


def test_patterns_with_an_open_fix_task_are_not_counted_as_without_one(now, error_source):
    error_source.patterns = [pattern("a", 40), pattern("b", 12)]
    make_task(dedupe_key=fix_task_dedupe_key("a"))
    finding = check_error_patterns(now)
    assert finding.evidence["without_fix_task"] == 1


def test_a_failing_error_source_is_a_warning_and_the_others_still_count(now, error_source):
    def broken(*, limit: int) -> list[dict[str, Any]]:
        raise RuntimeError("log API down")

    error_source.patterns = [pattern("a", 2)]
    register_error_source(broken)
    try:
        finding = check_error_patterns(now)
    finally:
        unregister_error_source(broken)
    assert finding.severity == "warning"
    assert finding.evidence["failed_sources"] == 1
    assert finding.evidence["patterns"] == 1
    assert "log API down" in finding.summary


# Completion rate


def finish(status: str, count: int, *, ago: timedelta) -> None:
    for _ in range(count):
        make_task(status, finished_at=timezone.now() - ago)


def test_a_high_completion_rate_is_ok(now):
    finish(TaskStatus.COMPLETED, 19, ago=timedelta(hours=2))
    finish(TaskStatus.FAILED, 1, ago=timedelta(hours=2))
    finding = check_completion_rate(now)
    assert finding.severity == "ok"
    assert finding.evidence["completion_rate_pct"] == 95.0


def test_too_few_finished_tasks_are_not_judged(now):
    finish(TaskStatus.FAILED, 3, ago=timedelta(hours=1))
    finding = check_completion_rate(now)
    assert finding.severity == "ok"
    assert "too few" in finding.summary


def test_a_low_completion_rate_is_a_warning_and_a_very_low_one_critical(now):
    finish(TaskStatus.COMPLETED, 7, ago=timedelta(hours=1))
    finish(TaskStatus.FAILED, 3, ago=timedelta(hours=1))
    assert check_completion_rate(now).severity == "warning"
    finish(TaskStatus.FAILED, 5, ago=timedelta(hours=1))
    finding = check_completion_rate(now)
    assert finding.severity == "critical"
    assert finding.evidence["failed"] == 8


def test_tasks_finished_more_than_a_day_ago_do_not_count(now):
    finish(TaskStatus.FAILED, 20, ago=timedelta(hours=30))
    finish(TaskStatus.COMPLETED, 10, ago=timedelta(hours=1))
    finding = check_completion_rate(now)
    assert finding.severity == "ok"
    assert finding.evidence["failed"] == 0


# System resources


def resources(**overrides: Any) -> SystemResources:
    values = {
        "disk_percent": 40.0,
        "disk_free_gb": 100.0,
        "memory_percent": 50.0,
        "load_1m": 0.5,
        "cpus": 2,
    }
    return SystemResources(**{**values, **overrides})


def test_plenty_of_disk_memory_and_cpu_is_ok(now, monkeypatch):
    monkeypatch.setattr(checks, "read_system_resources", lambda: resources())
    finding = check_system_resources(now)
    assert finding.severity == "ok"
    assert finding.evidence["load_per_cpu"] == 0.25


@pytest.mark.parametrize(
    ("overrides", "severity", "advice"),
    [
        ({"disk_percent": 90.0}, "warning", "disk"),
        ({"disk_percent": 99.0}, "critical", "disk"),
        ({"memory_percent": 98.0}, "critical", "memory"),
        ({"load_1m": 5.0}, "warning", "CPUs"),
    ],
)
def test_a_full_disk_low_memory_or_high_load_is_reported(
    now, monkeypatch, overrides, severity, advice
):
    monkeypatch.setattr(checks, "read_system_resources", lambda: resources(**overrides))
    finding = check_system_resources(now)
    assert finding.severity == severity
    assert advice in finding.suggested_action


def test_the_real_system_resources_can_be_read(now):
    finding = check_system_resources(now)
    assert 0 <= finding.evidence["disk_used_pct"] <= 100
    assert finding.evidence["cpus"] >= 1


# The whole diagnosis


def test_the_diagnosis_runs_the_six_checks_in_order():
    findings = diagnose_system()
    assert (
        [f.check for f in findings]
        == list(CHECKS)
        == [
            "database",
            "worker_heartbeats",
            "task_queue",
            "error_patterns",
            "completion_rate",
            "system_resources",
        ]
    )
    for finding in findings:
        assert finding.severity in ("ok", "warning", "critical")
        assert finding.suggested_action
        assert "check_ms" in finding.evidence


def test_a_check_that_crashes_is_reported_as_a_warning_not_raised(monkeypatch):
    def broken(now: datetime) -> Any:
        raise RuntimeError("psutil exploded")

    monkeypatch.setitem(CHECKS, "system_resources", ("System resources", broken))
    finding = diagnose_system()[-1]
    assert finding.severity == "warning"
    assert "psutil exploded" in finding.summary


def test_checks_past_the_deadline_are_skipped(monkeypatch):
    monkeypatch.setattr(diagnose, "DIAGNOSIS_DEADLINE_SECONDS", 0.0)
    findings = diagnose_system()
    assert {f.severity for f in findings} == {"warning"}
    assert all("Skipped" in f.summary for f in findings)


@pytest.fixture
def steady_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks that read the machine answer the same on a busy one."""
    monkeypatch.setattr(checks, "ping_database", lambda: 1.0)
    monkeypatch.setattr(checks, "read_system_resources", lambda: resources())


def test_the_diagnose_playbook_records_one_finding_per_check_and_changes_nothing(
    operator, steady_machine
):
    make_task(TaskStatus.BLOCKED)
    execution = run_playbook("diagnose", user=operator)
    assert execution.status == PlaybookExecution.Status.SUCCEEDED
    assert execution.started_by == operator
    assert [f["check"] for f in execution.findings] == list(CHECKS)
    assert execution.snapshots == []
    assert [a["step"] for a in execution.actions] == list(CHECKS)
    assert {a["declared"] for a in execution.actions} == {"read"}
    assert execution.worst_severity == "warning"
    assert "nothing to verify" in execution.verification["summary"]
    assert Task.objects.get().status == TaskStatus.BLOCKED


def test_the_diagnosis_reads_aggregates_not_rows(django_assert_max_num_queries, now):
    for _ in range(30):
        make_task(TaskStatus.BLOCKED)
        make_task(TaskStatus.COMPLETED, finished_at=now)
    # Database pings, two worker queries, one queue and one completion aggregate,
    # plus the savepoints around each check on PostgreSQL: nothing per task.
    with django_assert_max_num_queries(30):
        diagnose_system(now)
