from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from controlplane.approvals import decide_approval, unregister_waiter
from controlplane.models import Approval
from controlplane.tiers import Tier
from selfheal import playbooks
from selfheal.error_patterns import (
    fix_task_dedupe_key,
    register_error_source,
    unregister_error_source,
)
from selfheal.models import PlaybookExecution, Task, TaskStatus, Worker
from selfheal.playbooks import REPAIR_OVER_CAP_ACTION, run_playbook
from selfheal.playbooks import checks as machine_checks
from selfheal.playbooks.checks import SystemResources
from selfheal.playbooks.repair import (
    BLOCKED_RESET_CAP,
    FIX_TASK_CAP,
    STUCK_RESET_CAP,
    repair_over_cap_decided,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def waiters() -> Iterator[None]:
    playbooks.connect()
    yield
    unregister_waiter(REPAIR_OVER_CAP_ACTION, repair_over_cap_decided)


@pytest.fixture
def worker() -> Worker:
    worker, _ = Worker.register("alpha", ["noop"])
    return worker


def blocked_tasks(count: int) -> list[Task]:
    return [
        Task.objects.create(
            title=f"blocked {n}", kind="noop", status=TaskStatus.BLOCKED, blocked_reason="no disk"
        )
        for n in range(count)
    ]


def running_tasks(count: int, worker: Worker, *, lease_left: timedelta) -> list[Task]:
    return [
        Task.objects.create(
            title=f"running {n}",
            kind="noop",
            status=TaskStatus.RUNNING,
            lease_worker=worker,
            lease_expires_at=timezone.now() + lease_left,
            fencing_token=3,
            attempts=1,
        )
        for n in range(count)
    ]


class ErrorSource:
    def __init__(self) -> None:
        self.patterns: list[dict[str, Any]] = []

    def __call__(self, *, limit: int) -> list[dict[str, Any]]:
        return self.patterns[:limit]

    def frequent(self, *fingerprints: str, count: int = 50) -> None:
        self.patterns = [
            {
                "fingerprint": fp,
                "message": f"KeyError in {fp}",
                "count": count,
                "last_seen": timezone.now(),
            }
            for fp in fingerprints
        ]


@pytest.fixture
def errors() -> Iterator[ErrorSource]:
    source = ErrorSource()
    register_error_source(source)
    yield source
    unregister_error_source(source)


def statuses(tasks: list[Task]) -> set[str]:
    return set(Task.objects.filter(pk__in=[t.pk for t in tasks]).values_list("status", flat=True))


def over_cap_approvals() -> list[Approval]:
    return list(Approval.objects.filter(action=REPAIR_OVER_CAP_ACTION).order_by("pk"))


def performed(execution: PlaybookExecution, action: str) -> list[dict[str, Any]]:
    return [a for a in execution.actions if a["action"] == action and a["performed"]]


# Resetting blocked tasks


def test_blocked_tasks_within_the_cap_are_reset_to_pending(operator):
    tasks = blocked_tasks(3)
    execution = run_playbook("repair", user=operator)
    assert execution.status == PlaybookExecution.Status.SUCCEEDED
    assert statuses(tasks) == {TaskStatus.PENDING}
    assert set(Task.objects.values_list("blocked_reason", flat=True)) == {""}
    assert len(performed(execution, "reset_task_to_pending")) == 3
    assert [s["pk"] for s in execution.snapshots] == [t.pk for t in tasks]
    assert execution.snapshots[0]["fields"] == {"status": "blocked", "blocked_reason": "no disk"}
    assert execution.snapshots[0]["after"] == {"status": "pending", "blocked_reason": ""}
    assert over_cap_approvals() == []


def test_exactly_the_cap_of_blocked_tasks_are_all_reset(operator):
    tasks = blocked_tasks(BLOCKED_RESET_CAP)
    run_playbook("repair", user=operator)
    assert statuses(tasks) == {TaskStatus.PENDING}


def test_one_blocked_task_over_the_cap_resets_none_and_asks_for_approval(operator, worker):
    tasks = blocked_tasks(BLOCKED_RESET_CAP + 1)
    stuck = running_tasks(1, worker, lease_left=-timedelta(minutes=5))
    execution = run_playbook("repair", user=operator)
    assert statuses(tasks) == {TaskStatus.BLOCKED}
    [approval] = over_cap_approvals()
    assert approval.required_tier == Tier.OPERATOR
    assert approval.requested_by == operator
    assert approval.subject == execution
    assert approval.proposal["kind"] == "reset_blocked_tasks"
    assert approval.proposal["count"] == BLOCKED_RESET_CAP + 1
    assert approval.proposal["cap"] == BLOCKED_RESET_CAP
    assert sorted(approval.proposal["task_ids"]) == sorted(t.pk for t in tasks)
    assert "11 blocked tasks" in approval.reason
    assert "cap of 10" in approval.reason
    assert execution.status == PlaybookExecution.Status.NEEDS_APPROVAL
    # The other kinds are still repaired within their own caps.
    assert statuses(stuck) == {TaskStatus.PENDING}
    assert [s["pk"] for s in execution.snapshots] == [stuck[0].pk]


# Resetting tasks running past their lease


def test_tasks_running_past_their_lease_are_reset_and_live_leases_left_alone(operator, worker):
    stuck = running_tasks(STUCK_RESET_CAP, worker, lease_left=-timedelta(minutes=1))
    healthy = running_tasks(2, worker, lease_left=timedelta(minutes=1))
    execution = run_playbook("repair", user=operator)
    assert statuses(stuck) == {TaskStatus.PENDING}
    assert statuses(healthy) == {TaskStatus.RUNNING}
    snap = execution.snapshots[0]
    assert snap["fields"]["status"] == "running"
    assert snap["fields"]["lease_worker_id"] == worker.pk
    assert snap["after"]["lease_worker_id"] is None
    assert execution.status == PlaybookExecution.Status.SUCCEEDED


def test_one_stuck_task_over_the_cap_resets_none_and_asks_for_approval(worker):
    stuck = running_tasks(STUCK_RESET_CAP + 1, worker, lease_left=-timedelta(minutes=1))
    execution = run_playbook("repair")
    assert statuses(stuck) == {TaskStatus.RUNNING}
    [approval] = over_cap_approvals()
    assert approval.proposal["kind"] == "reset_stuck_running_tasks"
    assert approval.proposal["count"] == STUCK_RESET_CAP + 1
    assert approval.proposal["cap"] == STUCK_RESET_CAP
    # Without a user (a command, auto-heal), self-heal's service account asks.
    assert approval.requested_by.username == "service-selfheal"
    assert not approval.requested_by.is_active
    assert execution.status == PlaybookExecution.Status.NEEDS_APPROVAL
    assert execution.snapshots == []


# Fix tasks for error patterns


def test_fix_tasks_are_opened_for_frequent_error_patterns_within_the_cap(operator, errors):
    errors.frequent("a", "b", "c")
    errors.patterns.append({"fingerprint": "rare", "message": "x", "count": 2})
    execution = run_playbook("repair", user=operator)
    fix_tasks = Task.objects.filter(kind="fix_error_pattern").order_by("pk")
    assert [t.dedupe_key for t in fix_tasks] == [fix_task_dedupe_key(fp) for fp in "abc"]
    assert {t.source for t in fix_tasks} == {Task.Source.SELFHEAL}
    assert fix_tasks[0].payload["error_pattern"]["count"] == 50
    assert [s["created"] for s in execution.snapshots] == [True, True, True]
    assert len(performed(execution, "create_fix_task")) == 3


def test_a_pattern_with_an_open_fix_task_gets_no_second_one(operator, errors):
    errors.frequent("a", "b")
    run_playbook("repair", user=operator)
    again = run_playbook("repair", user=operator)
    assert Task.objects.filter(kind="fix_error_pattern").count() == 2
    assert performed(again, "create_fix_task") == []
    assert "No frequent error pattern lacks a fix task." in [
        a["description"] for a in again.actions
    ]


def test_error_patterns_over_the_cap_open_no_fix_task_and_ask_for_approval(operator, errors):
    errors.frequent("a", "b", "c", "d")
    execution = run_playbook("repair", user=operator)
    assert not Task.objects.filter(kind="fix_error_pattern").exists()
    [approval] = over_cap_approvals()
    assert approval.proposal["kind"] == "create_fix_tasks"
    assert approval.proposal["count"] == FIX_TASK_CAP + 1
    assert approval.proposal["cap"] == FIX_TASK_CAP
    assert [p["fingerprint"] for p in approval.proposal["patterns"]] == ["a", "b", "c", "d"]
    assert execution.status == PlaybookExecution.Status.NEEDS_APPROVAL


# Approval, then repair of all


def test_an_approval_over_the_cap_then_resets_all_of_them_with_snapshots(
    operator, operator2, django_capture_on_commit_callbacks
):
    tasks = blocked_tasks(BLOCKED_RESET_CAP + 4)
    asking = run_playbook("repair", user=operator)
    [approval] = over_cap_approvals()
    with django_capture_on_commit_callbacks(execute=True):
        decide_approval(approval, user=operator2, approve=True)
    assert statuses(tasks) == {TaskStatus.PENDING}
    approved = PlaybookExecution.objects.get(playbook="repair_approved")
    assert approved.started_by == operator2
    assert approved.status == PlaybookExecution.Status.SUCCEEDED
    assert sorted(s["pk"] for s in approved.snapshots) == sorted(t.pk for t in tasks)
    approval.refresh_from_db()
    assert f"Execution #{approved.pk}" in approval.outcome
    asking.refresh_from_db()
    assert asking.status == PlaybookExecution.Status.SUCCEEDED
    assert f"Approval #{approval.pk}" in asking.summary


def test_an_approval_resets_only_the_listed_tasks_that_still_qualify(
    operator, operator2, django_capture_on_commit_callbacks
):
    tasks = blocked_tasks(BLOCKED_RESET_CAP + 1)
    run_playbook("repair", user=operator)
    Task.objects.filter(pk=tasks[0].pk).update(status=TaskStatus.CANCELLED)
    newcomer = blocked_tasks(1)[0]
    [approval] = over_cap_approvals()
    with django_capture_on_commit_callbacks(execute=True):
        decide_approval(approval, user=operator2, approve=True)
    assert statuses(tasks[1:]) == {TaskStatus.PENDING}
    assert Task.objects.get(pk=tasks[0].pk).status == TaskStatus.CANCELLED
    # A task that was not in the approval is not repaired by it.
    assert Task.objects.get(pk=newcomer.pk).status == TaskStatus.BLOCKED


def test_an_approval_of_error_patterns_opens_fix_tasks_for_all_of_them(
    operator, operator2, errors, django_capture_on_commit_callbacks
):
    errors.frequent("a", "b", "c", "d", "e")
    run_playbook("repair", user=operator)
    [approval] = over_cap_approvals()
    with django_capture_on_commit_callbacks(execute=True):
        decide_approval(approval, user=operator2, approve=True)
    assert Task.objects.filter(kind="fix_error_pattern").count() == 5


def test_a_rejected_approval_repairs_nothing(
    operator, operator2, django_capture_on_commit_callbacks
):
    tasks = blocked_tasks(BLOCKED_RESET_CAP + 1)
    asking = run_playbook("repair", user=operator)
    [approval] = over_cap_approvals()
    with django_capture_on_commit_callbacks(execute=True):
        decide_approval(approval, user=operator2, approve=False)
    assert statuses(tasks) == {TaskStatus.BLOCKED}
    assert not PlaybookExecution.objects.filter(playbook="repair_approved").exists()
    approval.refresh_from_db()
    assert approval.outcome == "Nothing repaired: the request was rejected."
    asking.refresh_from_db()
    assert asking.status == PlaybookExecution.Status.SUCCEEDED


def test_the_waiter_repairs_nothing_twice_for_one_approval(
    operator, operator2, django_capture_on_commit_callbacks
):
    blocked_tasks(BLOCKED_RESET_CAP + 1)
    run_playbook("repair", user=operator)
    [approval] = over_cap_approvals()
    with django_capture_on_commit_callbacks(execute=True):
        decide_approval(approval, user=operator2, approve=True)
    approval.refresh_from_db()
    repair_over_cap_decided(approval)
    assert PlaybookExecution.objects.filter(playbook="repair_approved").count() == 1


# Dry run


def test_a_dry_run_changes_no_task_and_reports_what_it_would_do(operator, worker, errors):
    errors.frequent("a")
    blocked_tasks(BLOCKED_RESET_CAP + 1)
    running_tasks(2, worker, lease_left=-timedelta(minutes=1))
    before = list(Task.objects.order_by("pk").values())
    execution = run_playbook("repair", user=operator, dry_run=True)
    assert list(Task.objects.order_by("pk").values()) == before
    assert Approval.objects.count() == 0
    assert execution.dry_run
    assert execution.status == PlaybookExecution.Status.SUCCEEDED
    assert execution.snapshots == []
    would = [a for a in execution.actions if not a["performed"]]
    assert [a["action"] for a in would] == [
        "reset_task_to_pending",
        "reset_task_to_pending",
        "create_fix_task",
        "request_approval",
    ]
    assert all(a["description"].startswith("Would") for a in would)
    assert "nothing changed" in execution.summary
    assert not execution.can_roll_back


# Verification and permissions


def test_the_verification_diagnoses_again_and_says_what_improved(operator, monkeypatch):
    # The machine's load and the database's latency hold still between the two
    # diagnoses, however busy the machine running the tests.
    monkeypatch.setattr(machine_checks, "ping_database", lambda: 1.0)
    monkeypatch.setattr(
        machine_checks,
        "read_system_resources",
        lambda: SystemResources(
            disk_percent=40.0, disk_free_gb=50.0, memory_percent=30.0, load_1m=0.2, cpus=4
        ),
    )
    blocked_tasks(2)
    execution = run_playbook("repair", user=operator)
    checks = {c["check"]: c for c in execution.verification["checks"]}
    assert len(checks) == 6
    queue = checks["task_queue"]
    assert (queue["before"], queue["after"], queue["change"]) == ("warning", "ok", "improved")
    assert queue["evidence"]["blocked"] == [2, 0]
    assert queue["evidence"]["pending"] == [0, 2]
    assert "1 check(s) improved: task_queue warning → ok" in execution.verification["summary"]
    assert checks["database"]["change"] == "unchanged"
    assert execution.verification["summary"] in execution.summary


def test_an_observer_cannot_run_a_repair(observer):
    blocked_tasks(1)
    with pytest.raises(PermissionDenied):
        run_playbook("repair", user=observer)
    assert not PlaybookExecution.objects.exists()


def test_a_repair_does_not_ask_again_while_an_approval_for_the_same_kind_is_pending(operator):
    blocked_tasks(BLOCKED_RESET_CAP + 1)
    run_playbook("repair", user=operator)
    again = run_playbook("repair")
    [approval] = over_cap_approvals()
    assert f"Approval #{approval.pk} to repair blocked tasks is already pending" in " ".join(
        a["description"] for a in again.actions
    )
    assert again.status == PlaybookExecution.Status.SUCCEEDED


def test_an_approval_over_the_stuck_cap_then_resets_all_stuck_tasks(
    worker, operator, operator2, django_capture_on_commit_callbacks
):
    stuck = running_tasks(STUCK_RESET_CAP + 2, worker, lease_left=-timedelta(minutes=1))
    run_playbook("repair", user=operator)
    assert statuses(stuck) == {TaskStatus.RUNNING}
    [approval] = over_cap_approvals()
    with django_capture_on_commit_callbacks(execute=True):
        decide_approval(approval, user=operator2, approve=True)
    assert statuses(stuck) == {TaskStatus.PENDING}
    approved = PlaybookExecution.objects.get(playbook="repair_approved")
    assert len(approved.snapshots) == STUCK_RESET_CAP + 2
    assert {s["fields"]["status"] for s in approved.snapshots} == {"running"}
