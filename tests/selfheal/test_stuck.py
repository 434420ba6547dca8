"""The periodic parts of the engine: the stuck detector (and `manage.py detect_stuck`)
and the task router that asks a person when no live worker can do a task."""

from __future__ import annotations

from io import StringIO

import pytest
from django.conf import settings as project_settings
from django.core.management import call_command
from django.utils import timezone

from controlplane.approvals import decide_approval, expire_due_approvals
from controlplane.models import Approval, AuditEvent
from selfheal import engine, stuck, tasks, unblock
from selfheal.engine_errors import LeaseLost
from selfheal.models import Task, TaskStatus, Worker
from tests.selfheal import age, expire_lease, make_task, make_worker, silence, stored

pytestmark = pytest.mark.django_db


def claimed_by(worker: Worker, **fields) -> Task:
    make_task(**fields)
    task = engine.claim(worker)
    assert task is not None
    return task


def detect_stuck() -> list[str]:
    out = StringIO()
    call_command("detect_stuck", stdout=out)
    return out.getvalue().splitlines()


# The stuck detector.


def test_a_worker_killed_mid_task_loses_it_and_another_does_it_once():
    first, _ = make_worker("first")
    second, _ = make_worker("second")
    task = claimed_by(first)
    expire_lease(task)  # `first` died: nobody extends its lease

    report = stuck.detect_stuck()
    assert [t.pk for t in report.requeued] == [task.pk]
    requeued = stored(task)
    assert requeued.status == TaskStatus.PENDING
    assert requeued.attempts == 1  # counted at the claim, not again
    assert requeued.lease_worker is None
    assert "stopped renewing it" in requeued.error

    again = engine.claim(second)
    assert again is not None
    assert again.pk == task.pk
    assert (again.attempts, again.fencing_token) == (2, 2)
    engine.complete(second, task.pk, again.fencing_token, {"by": "second"})
    with pytest.raises(LeaseLost, match="fencing token 1 is stale"):
        engine.complete(first, task.pk, task.fencing_token, {"by": "first"})
    done = stored(task)
    assert (done.status, done.result) == (TaskStatus.COMPLETED, {"by": "second"})
    assert AuditEvent.objects.filter(action="task.completed", object_id=str(task.pk)).count() == 1


def test_a_task_past_its_lease_on_its_last_attempt_fails():
    worker, _ = make_worker()
    task = claimed_by(worker, max_attempts=1)
    expire_lease(task)
    report = stuck.detect_stuck()
    assert [t.pk for t in report.failed] == [task.pk]
    failed = stored(task)
    assert failed.status == TaskStatus.FAILED
    assert failed.error.endswith("No attempts left.")
    assert failed.finished_at is not None


def test_a_task_within_its_lease_is_left_alone():
    worker, _ = make_worker()
    task = claimed_by(worker)
    report = stuck.detect_stuck()
    assert not report.changed_anything
    assert stored(task).status == TaskStatus.RUNNING


def test_a_lease_extended_in_time_is_left_alone():
    worker, _ = make_worker()
    task = claimed_by(worker)
    expire_lease(task)
    engine.extend_lease(worker, task.pk, task.fencing_token)  # just before the detector
    assert not stuck.detect_stuck().changed_anything
    assert stored(task).status == TaskStatus.RUNNING


def test_an_extension_after_the_detector_put_the_task_back_is_refused():
    worker, _ = make_worker()
    task = claimed_by(worker)
    expire_lease(task)
    stuck.detect_stuck()
    with pytest.raises(LeaseLost, match="is pending, no longer running"):
        engine.extend_lease(worker, task.pk, task.fencing_token)


def test_a_silent_worker_goes_offline_and_its_tasks_go_back(settings):
    settings.HEARTBEAT_SECONDS = 10
    silent, _ = make_worker("silent")
    task = claimed_by(silent)
    silence(silent, 31)  # three missed beats
    report = stuck.detect_stuck()
    assert [w.name for w in report.offline] == ["silent"]
    assert [t.pk for t in report.requeued] == [task.pk]
    assert Worker.objects.get(pk=silent.pk).status == Worker.Status.OFFLINE
    requeued = stored(task)
    assert requeued.status == TaskStatus.PENDING
    assert requeued.error.startswith("Worker silent went offline: no heartbeat since")
    event = AuditEvent.objects.get(action="worker.offline", object_id=str(silent.pk))
    assert event.before == {"status": "online"}


def test_a_worker_that_missed_fewer_than_three_beats_stays_online(settings):
    settings.HEARTBEAT_SECONDS = 10
    late, _ = make_worker("late")
    task = claimed_by(late)
    silence(late, 25)
    assert not stuck.detect_stuck().changed_anything
    assert Worker.objects.get(pk=late.pk).status == Worker.Status.ONLINE
    assert stored(task).status == TaskStatus.RUNNING


def test_an_offline_worker_is_not_reported_again():
    gone, _ = make_worker("gone", online=False)
    silence(gone, 3600)
    assert not stuck.detect_stuck().changed_anything


def test_the_command_prints_what_it_did(settings):
    settings.HEARTBEAT_SECONDS = 10
    silent, _ = make_worker("silent")
    lost = claimed_by(silent, title="Rotate the keys")
    silence(silent, 60)
    worker, _ = make_worker("alive")
    last = claimed_by(worker, title="Vacuum", max_attempts=1)
    expire_lease(last)
    lines = detect_stuck()
    assert lines[0].startswith("Worker silent: offline (last heartbeat ")
    assert lines[1].startswith(
        f"Task #{lost.pk} “Rotate the keys”: back to pending (attempt 1 of 3"
    )
    assert lines[2].startswith(f"Task #{last.pk} “Vacuum”: failed after 1 attempts.")
    assert lines[-1] == "Done: 1 workers offline, 1 tasks back to pending, 1 failed."


def test_the_command_says_when_nothing_is_stuck():
    assert detect_stuck() == ["Nothing stuck: every running task holds a live lease."]


# The task router.


@pytest.fixture
def unblock_after(settings) -> int:
    settings.UNBLOCK_AFTER_SECONDS = 600
    return 600


def test_a_task_no_worker_could_do_for_the_whole_window_waits_for_approval(unblock_after):
    make_worker("ops-only", ["ops"])
    task = make_task("Retrain", required_capabilities=["gpu", "ops"])
    age(task, 12 * 60)
    (approval,) = unblock.route_unclaimable_tasks()
    waiting = stored(task)
    assert waiting.status == TaskStatus.WAITING_APPROVAL
    assert approval.action == "selfheal.unblock_task"
    assert approval.subject == waiting
    assert approval.requested_by.username == "service-selfheal"
    assert approval.reason.startswith(
        f"Task #{task.pk} “Retrain” has waited 12 minutes for a worker and no live worker has gpu."
    )
    assert "bin/manage run_worker --capabilities gpu,ops" in approval.reason
    assert approval.proposal["missing_capabilities"] == ["gpu"]
    assert waiting.blocked_reason == approval.reason
    event = AuditEvent.objects.get(action="task.waiting_approval", object_id=str(task.pk))
    assert event.before == {"status": "pending"}


def test_the_unblock_proposal_says_how_long_the_task_waited(unblock_after):
    task = make_task("Retrain", required_capabilities=["gpu"])
    age(task, 12 * 60)
    now = timezone.now()
    (approval,) = unblock.route_unclaimable_tasks(now)
    # Measured up to the routing, not from the move to waiting_approval it makes.
    assert approval.proposal["waited_seconds"] == pytest.approx(12 * 60, abs=5)


def test_a_task_needing_nothing_waits_for_approval_when_no_worker_is_alive(unblock_after):
    task = make_task("Anything")
    age(task, 601)
    (approval,) = unblock.route_unclaimable_tasks()
    assert "no worker has been alive" in approval.reason


def test_capabilities_split_over_workers_are_named_as_such(unblock_after):
    make_worker("gpu-box", ["gpu"])
    make_worker("ops-box", ["ops"])
    task = make_task(required_capabilities=["gpu", "ops"])
    age(task, 601)
    (approval,) = unblock.route_unclaimable_tasks()
    assert "no single live worker has all of gpu, ops" in approval.reason


def test_a_task_a_live_worker_can_do_stays_in_the_queue(unblock_after):
    make_worker("gpu-box", ["gpu", "ops"])
    task = make_task(required_capabilities=["gpu"])
    age(task, 3600)
    assert unblock.route_unclaimable_tasks() == []
    assert stored(task).status == TaskStatus.PENDING


def test_a_task_younger_than_the_window_stays_in_the_queue(unblock_after):
    task = make_task(required_capabilities=["gpu"])
    age(task, 599)
    assert unblock.route_unclaimable_tasks() == []
    assert stored(task).status == TaskStatus.PENDING


def test_a_capable_worker_alive_during_the_window_keeps_the_task_waiting(unblock_after):
    gpu, _ = make_worker("gpu-box", ["gpu"])
    silence(gpu, 300)  # died five minutes ago: within the window
    task = make_task(required_capabilities=["gpu"])
    age(task, 900)
    assert unblock.route_unclaimable_tasks() == []
    silence(gpu, 700)
    assert len(unblock.route_unclaimable_tasks()) == 1
    assert stored(task).status == TaskStatus.WAITING_APPROVAL


def test_a_revoked_worker_does_not_count(unblock_after):
    gpu, _ = make_worker("gpu-box", ["gpu"])
    gpu.revoked_at = timezone.now()
    gpu.save()
    task = make_task(required_capabilities=["gpu"])
    age(task, 601)
    assert len(unblock.route_unclaimable_tasks()) == 1


def test_routing_again_asks_only_once(unblock_after):
    task = make_task(required_capabilities=["gpu"])
    age(task, 601)
    assert len(unblock.route_unclaimable_tasks()) == 1
    assert unblock.route_unclaimable_tasks() == []
    assert Approval.objects.filter(action=unblock.UNBLOCK_ACTION).count() == 1


def ask_to_unblock() -> tuple[Task, Approval]:
    task = make_task("Retrain", required_capabilities=["gpu"])
    age(task, 601)
    (approval,) = unblock.route_unclaimable_tasks()
    return task, approval


def test_approving_puts_the_task_back_in_the_queue(
    unblock_after, operator, django_capture_on_commit_callbacks
):
    task, approval = ask_to_unblock()
    with django_capture_on_commit_callbacks(execute=True):
        decide_approval(approval, user=operator, approve=True)
    back = stored(task)
    assert back.status == TaskStatus.PENDING
    assert back.blocked_reason == ""
    event = AuditEvent.objects.get(action="task.pending", object_id=str(task.pk))
    assert event.actor == operator
    assert event.after["reason"] == f"Approval #{approval.pk} was approved."
    # It waits a whole window again before asking again.
    assert unblock.route_unclaimable_tasks() == []


def test_rejecting_cancels_the_task(unblock_after, operator, django_capture_on_commit_callbacks):
    task, approval = ask_to_unblock()
    with django_capture_on_commit_callbacks(execute=True):
        decide_approval(approval, user=operator, approve=False)
    assert stored(task).status == TaskStatus.CANCELLED


def test_an_expired_approval_cancels_the_task(unblock_after, django_capture_on_commit_callbacks):
    task, approval = ask_to_unblock()
    Approval.objects.filter(pk=approval.pk).update(expires_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        expire_due_approvals()
    assert stored(task).status == TaskStatus.CANCELLED


def test_a_decision_on_a_task_that_moved_meanwhile_changes_nothing(
    unblock_after, operator, django_capture_on_commit_callbacks
):
    task, approval = ask_to_unblock()
    engine.transition(stored(task), TaskStatus.CANCELLED)
    with django_capture_on_commit_callbacks(execute=True):
        decide_approval(approval, user=operator, approve=True)
    assert stored(task).status == TaskStatus.CANCELLED


# The schedule.


def test_the_detector_and_the_router_are_in_the_periodic_schedule():
    schedule = {
        entry["task"]: entry["schedule"] for entry in project_settings.CELERY_BEAT_SCHEDULE.values()
    }
    assert schedule["selfheal.tasks.detect_stuck"] == 15.0
    assert schedule["selfheal.tasks.route_unclaimable_tasks"] == 60.0
    assert tasks.detect_stuck.name == "selfheal.tasks.detect_stuck"
    assert tasks.route_unclaimable_tasks.name == "selfheal.tasks.route_unclaimable_tasks"


def test_the_periodic_tasks_run_the_engine(unblock_after):
    worker, _ = make_worker()
    task = claimed_by(worker)
    expire_lease(task)
    assert tasks.detect_stuck.run() == {"offline": 0, "requeued": 1, "failed": 0}
    age(stored(task), 601)
    Worker._base_manager.all().delete()
    assert tasks.route_unclaimable_tasks.run() == 1
