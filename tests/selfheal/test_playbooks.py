from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db.models import Q
from django.utils import timezone

from controlplane.models import AuditEvent
from selfheal.error_patterns import register_error_source, unregister_error_source
from selfheal.models import PlaybookExecution, Task, TaskStatus, Worker
from selfheal.playbooks import (
    MAX_STEPS,
    SAFE_ACTIONS,
    Playbook,
    PlaybookDefinitionError,
    PlaybookRun,
    RollbackRefused,
    Step,
    UnknownPlaybook,
    execute_playbook_task,
    get_playbook,
    playbooks,
    register_playbook,
    rollback,
    run_playbook,
    step,
)
from selfheal.playbooks.snapshots import row_values
from selfheal.task_kinds import PermanentFailure, TaskContext

# The step limit and the safe-action allow-list


def test_the_allow_list_holds_only_reversible_actions():
    assert set(SAFE_ACTIONS) == {
        "read",
        "reset_task_to_pending",
        "create_fix_task",
        "request_approval",
    }


def test_a_step_with_an_action_outside_the_allow_list_cannot_be_declared():
    with pytest.raises(PlaybookDefinitionError, match="'delete_task' is not a safe"):

        class Destructive(Playbook):
            name = "destructive"

            @step("Delete failed tasks", action="delete_task")
            def purge(self, run: PlaybookRun) -> None:
                Task.objects.filter(status=TaskStatus.FAILED).delete()


def many_steps(count: int) -> dict[str, Any]:
    def make(n: int) -> Any:
        return step(f"Read {n}", action="read")(lambda self, run: None)

    return {f"step_{n}": make(n) for n in range(count)}


def test_a_playbook_of_ten_steps_is_allowed():
    cls = type("TenSteps", (Playbook,), {"name": "ten", **many_steps(MAX_STEPS)})
    assert len(cls.steps) == MAX_STEPS


def test_a_playbook_of_eleven_steps_cannot_be_defined():
    with pytest.raises(PlaybookDefinitionError, match="11 steps; a playbook has at most 10"):
        type("ElevenSteps", (Playbook,), {"name": "eleven", **many_steps(MAX_STEPS + 1)})


def test_a_subclass_cannot_grow_past_the_step_limit():
    parent = type("Six", (Playbook,), {"name": "six", **many_steps(6)})
    extra = {
        f"more_{n}": step(f"More {n}", action="read")(lambda self, run: None) for n in range(5)
    }
    with pytest.raises(PlaybookDefinitionError, match="11 steps"):
        type("SixPlusFive", (parent,), {"name": "eleven", **extra})


def test_registration_checks_the_rules_again():
    class Forged(Playbook):
        name = "forged"

    Forged.steps = tuple(Step(f"s{n}", "Read", "read") for n in range(MAX_STEPS + 1))
    with pytest.raises(PlaybookDefinitionError, match="at most 10"):
        register_playbook(Forged)
    Forged.steps = (Step("wipe", "Wipe", "truncate_table"),)
    with pytest.raises(PlaybookDefinitionError, match="not a safe playbook action"):
        register_playbook(Forged)


class SneakyPlaybook(Playbook):
    """Declares a read, then tries to change a task."""

    name = "sneaky"

    @step("Look at blocked tasks", action="read")
    def look(self, run: PlaybookRun) -> None:
        for task in Task.objects.filter(status=TaskStatus.BLOCKED):
            run.reset_task_to_pending(
                task.pk, qualifies=Q(status=TaskStatus.BLOCKED), reason="not declared"
            )


@pytest.mark.django_db
def test_a_step_that_tries_an_action_it_did_not_declare_is_refused_and_changes_nothing():
    task = Task.objects.create(title="t", kind="noop", status=TaskStatus.BLOCKED)
    execution = SneakyPlaybook().execute()
    assert execution.status == PlaybookExecution.Status.FAILED
    assert "declared 'read' but tried 'reset_task_to_pending'" in execution.error
    task.refresh_from_db()
    assert task.status == TaskStatus.BLOCKED
    assert execution.snapshots == []


# The registry


def test_the_product_playbooks_are_registered_and_listed():
    assert [cls.name for cls in playbooks()] == ["diagnose", "repair"]
    assert get_playbook("repair").name == "repair"
    # The approval's playbook runs only from an approval, so it is not listed.
    assert get_playbook("repair_approved").listed is False
    for cls in playbooks():
        assert len(cls.steps) <= MAX_STEPS
        assert {s.action for s in cls.steps} <= set(SAFE_ACTIONS)


@pytest.mark.django_db
def test_an_unknown_playbook_is_refused_by_name():
    with pytest.raises(UnknownPlaybook, match="No playbook named 'reboot'"):
        run_playbook("reboot")
    assert not PlaybookExecution.objects.exists()


# Rollback


@pytest.fixture
def worker(db: Any) -> Worker:
    worker, _ = Worker.register("alpha", ["noop"])
    return worker


def blocked(title: str = "blocked") -> Task:
    return Task.objects.create(
        title=title, kind="noop", status=TaskStatus.BLOCKED, blocked_reason="disk full"
    )


def stuck(worker: Worker) -> Task:
    return Task.objects.create(
        title="stuck",
        kind="noop",
        status=TaskStatus.RUNNING,
        lease_worker=worker,
        lease_expires_at=timezone.now() - timedelta(minutes=3),
        fencing_token=7,
        attempts=2,
        started_at=timezone.now() - timedelta(minutes=10),
    )


def rows() -> list[dict[str, Any]]:
    return [row_values(task) for task in Task.objects.order_by("pk")]


@pytest.mark.django_db
def test_rollback_restores_exactly_the_snapshot(operator, worker):
    tasks = [blocked("one"), blocked("two"), stuck(worker)]
    untouched = Task.objects.create(title="pending", kind="noop")
    before = rows()
    execution = run_playbook("repair", user=operator)
    assert len(execution.snapshots) == 3
    assert rows() != before
    rolled_back = rollback(execution, user=operator)
    assert rows() == before
    assert rolled_back.status == PlaybookExecution.Status.ROLLED_BACK
    assert rolled_back.rolled_back_by == operator
    assert rolled_back.rolled_back_at is not None
    assert Task.objects.get(pk=tasks[2].pk).lease_worker == worker
    assert Task.objects.get(pk=untouched.pk).status == TaskStatus.PENDING


@pytest.mark.django_db
def test_rollback_is_audited_with_each_row_it_restored(operator):
    blocked()
    execution = run_playbook("repair", user=operator)
    rollback(execution, user=operator)
    event = AuditEvent.objects.get(action="playbookexecution.rolled_back")
    assert event.actor == operator
    assert event.before == {"status": "succeeded"}
    assert event.after["status"] == "rolled_back"
    assert len(event.after["restored"]) == 1
    # The status move itself went through the engine, which audits it too.
    assert AuditEvent.objects.filter(action="task.blocked", actor=operator).exists()


@pytest.mark.django_db
def test_rollback_cancels_the_fix_tasks_the_execution_opened(operator):
    class Source:
        def __call__(self, *, limit: int) -> list[dict[str, Any]]:
            return [{"fingerprint": "boom", "message": "Boom", "count": 99}]

    source = Source()
    register_error_source(source)
    try:
        execution = run_playbook("repair", user=operator)
    finally:
        unregister_error_source(source)
    fix = Task.objects.get(kind="fix_error_pattern")
    rollback(execution, user=operator)
    fix.refresh_from_db()
    assert fix.status == TaskStatus.CANCELLED


@pytest.mark.django_db
def test_rollback_refuses_when_a_row_changed_since_and_changes_nothing(operator):
    first, second = blocked("one"), blocked("two")
    execution = run_playbook("repair", user=operator)
    # A worker claimed the second one meanwhile.
    Task.objects.filter(pk=second.pk).update(status=TaskStatus.RUNNING)
    before = rows()
    with pytest.raises(RollbackRefused) as refused:
        rollback(execution, user=operator)
    message = str(refused.value)
    assert "was not rolled back, and nothing was changed" in message
    assert f"selfheal.task #{second.pk} changed since" in message
    assert "status is 'running', was set to 'pending'" in message
    assert rows() == before
    assert Task.objects.get(pk=first.pk).status == TaskStatus.PENDING
    execution.refresh_from_db()
    assert execution.status == PlaybookExecution.Status.SUCCEEDED
    assert AuditEvent.objects.filter(action="playbookexecution.rollback_refused").exists()


@pytest.mark.django_db
def test_rollback_ignores_changes_to_fields_the_execution_did_not_set(operator):
    task = blocked()
    execution = run_playbook("repair", user=operator)
    Task.objects.filter(pk=task.pk).update(priority=5)
    rollback(execution, user=operator)
    task.refresh_from_db()
    assert (task.status, task.blocked_reason, task.priority) == ("blocked", "disk full", 5)


@pytest.mark.django_db
def test_an_execution_cannot_be_rolled_back_twice(operator):
    blocked()
    execution = run_playbook("repair", user=operator)
    rollback(execution, user=operator)
    with pytest.raises(RollbackRefused, match="already rolled back"):
        rollback(execution, user=operator)


@pytest.mark.django_db
def test_a_dry_run_or_a_diagnosis_has_nothing_to_roll_back(operator):
    blocked()
    dry = run_playbook("repair", user=operator, dry_run=True)
    with pytest.raises(RollbackRefused, match="dry run"):
        rollback(dry, user=operator)
    diagnosis = run_playbook("diagnose", user=operator)
    with pytest.raises(RollbackRefused, match="nothing to restore"):
        rollback(diagnosis, user=operator)


@pytest.mark.django_db
def test_an_observer_cannot_roll_back(operator, observer):
    task = blocked()
    execution = run_playbook("repair", user=operator)
    with pytest.raises(RollbackRefused, match="tier"):
        rollback(execution, user=observer)
    task.refresh_from_db()
    assert task.status == TaskStatus.PENDING


# Wiring: the approval waiter and the worker's task kind


def test_connect_registers_the_over_cap_waiter_and_the_playbook_task_kind():
    from controlplane import approvals
    from selfheal.playbooks import PLAYBOOK_TASK_KIND, REPAIR_OVER_CAP_ACTION, connect
    from selfheal.playbooks.repair import repair_over_cap_decided
    from selfheal.task_kinds import handler_for

    connect()
    connect()  # twice is harmless
    assert approvals._waiters[REPAIR_OVER_CAP_ACTION].count(repair_over_cap_decided) == 1
    assert handler_for(PLAYBOOK_TASK_KIND) is execute_playbook_task


@pytest.mark.django_db
def test_a_worker_task_runs_the_playbook_it_names():
    result = execute_playbook_task(
        TaskContext(
            task_id=1, kind="playbook.run", title="t", payload={"playbook": "diagnose"}, attempt=1
        )
    )
    execution = PlaybookExecution.objects.get(pk=result["execution"])
    assert execution.trigger == PlaybookExecution.Trigger.WORKER
    assert result["status"] == "succeeded"


@pytest.mark.django_db
def test_a_worker_task_naming_an_unknown_playbook_fails_for_good():
    context = TaskContext(
        task_id=1, kind="playbook.run", title="t", payload={"playbook": "reboot"}, attempt=1
    )
    with pytest.raises(PermanentFailure, match="No playbook named 'reboot'"):
        execute_playbook_task(context)
