from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from controlplane.approvals import (
    ApprovalError,
    decide_approval,
    expire_due_approvals,
    pending_approvals,
    register_waiter,
    request_approval,
    unregister_waiter,
)
from controlplane.models import Approval, AuditEvent
from controlplane.tiers import Tier

ACTION = "test.risky-tool"


def skip_unless_postgres() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (set DATABASE_URL)")


class Waiter:
    """Records each approval it is called with, from whichever thread calls it."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []
        self._lock = threading.Lock()

    def __call__(self, approval: Approval) -> None:
        with self._lock:
            self.calls.append((approval.pk, approval.status))


@pytest.fixture
def waiter() -> Iterator[Waiter]:
    waiter = Waiter()
    register_waiter(ACTION, waiter)
    yield waiter
    unregister_waiter(ACTION, waiter)


def ask(requested_by: Any, **fields: Any) -> Approval:
    return request_approval(
        action=ACTION, requested_by=requested_by, reason="Run the migration tool", **fields
    )


def stored(approval: Approval) -> Approval:
    return Approval.objects.get(pk=approval.pk)


# Requesting.


@pytest.mark.django_db
def test_a_request_is_pending_and_audited(operator):
    approval = ask(operator)
    assert approval.is_pending
    assert approval.required_tier == Tier.OPERATOR
    assert approval.expires_at > timezone.now()
    event = AuditEvent.objects.get(action="approval.requested")
    assert event.actor == operator
    assert event.object_id == str(approval.pk)
    assert list(pending_approvals()) == [approval]


@pytest.mark.django_db
def test_a_request_needs_a_reason(operator):
    with pytest.raises(ApprovalError, match="needs a reason"):
        request_approval(action=ACTION, requested_by=operator, reason="   ")
    assert not Approval.objects.exists()


@pytest.mark.django_db
def test_an_amount_forces_the_owner_tier_whatever_was_asked(operator):
    approval = ask(operator, amount=Decimal("12.50"), required_tier=Tier.OPERATOR)
    assert approval.required_tier == Tier.OWNER
    assert stored(approval).amount == Decimal("12.50")


@pytest.mark.django_db
def test_a_request_for_an_observer_decision_is_refused(operator):
    with pytest.raises(ApprovalError, match="Operators or Owners"):
        ask(operator, required_tier=Tier.OBSERVER)


# Who may decide.


@pytest.mark.django_db
def test_nobody_approves_their_own_request(operator, waiter):
    approval = ask(operator)
    with pytest.raises(ApprovalError, match="Nobody can decide their own request"):
        decide_approval(approval, user=operator, approve=True)
    assert stored(approval).is_pending
    assert waiter.calls == []


@pytest.mark.django_db
def test_not_even_an_owner_approves_their_own_request(owner):
    approval = ask(owner)
    with pytest.raises(ApprovalError, match="Nobody can decide their own request"):
        decide_approval(approval, user=owner, approve=True)
    assert stored(approval).is_pending


@pytest.mark.django_db
def test_nobody_rejects_their_own_request_either(operator):
    approval = ask(operator)
    with pytest.raises(ApprovalError, match="Nobody can decide their own request"):
        decide_approval(approval, user=operator, approve=False)
    assert stored(approval).is_pending


@pytest.mark.django_db
def test_an_observer_cannot_decide(operator, observer):
    approval = ask(operator)
    with pytest.raises(ApprovalError, match="Your tier cannot decide approvals"):
        decide_approval(approval, user=observer, approve=True)
    assert stored(approval).is_pending


@pytest.mark.django_db
def test_an_outsider_cannot_decide(operator, outsider):
    approval = ask(operator)
    with pytest.raises(ApprovalError, match="Your tier cannot decide approvals"):
        decide_approval(approval, user=outsider, approve=True)
    assert stored(approval).is_pending


@pytest.mark.django_db
def test_an_operator_cannot_decide_an_approval_about_money(operator, operator2):
    approval = ask(operator, amount=Decimal("40"))
    with pytest.raises(ApprovalError, match=r"needs the Owner tier .*about money"):
        decide_approval(approval, user=operator2, approve=True)
    assert stored(approval).is_pending


@pytest.mark.django_db
def test_an_owner_decides_an_approval_about_money(operator, owner, waiter):
    approval = ask(operator, amount=Decimal("40"))
    approval = decide_approval(approval, user=owner, approve=True)
    assert approval.status == Approval.Status.APPROVED
    assert approval.decided_by == owner


@pytest.mark.django_db
def test_a_superuser_counts_as_an_owner(operator, superuser):
    approval = ask(operator, amount=Decimal("40"))
    approval = decide_approval(approval, user=superuser, approve=False)
    assert approval.status == Approval.Status.REJECTED


@pytest.mark.django_db
def test_another_operator_decides_an_operator_approval(operator, operator2):
    approval = decide_approval(ask(operator), user=operator2, approve=True, note="  fine  ")
    approval = stored(approval)
    assert approval.status == Approval.Status.APPROVED
    assert approval.decided_by == operator2
    assert approval.decided_at is not None
    assert approval.decision_note == "fine"


@pytest.mark.django_db
def test_an_expired_request_cannot_be_approved(operator, owner, waiter):
    approval = ask(operator)
    Approval.objects.filter(pk=approval.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    approval.refresh_from_db()
    assert approval.is_expired
    with pytest.raises(ApprovalError, match="has expired"):
        decide_approval(approval, user=owner, approve=True)
    approval = stored(approval)
    assert approval.status == Approval.Status.PENDING
    assert approval.decided_by is None
    assert waiter.calls == []
    assert list(pending_approvals()) == []


@pytest.mark.django_db
def test_a_decided_request_cannot_be_decided_again(operator, owner, owner2):
    approval = ask(operator)
    decide_approval(approval, user=owner, approve=False)
    with pytest.raises(ApprovalError, match="already rejected"):
        decide_approval(stored(approval), user=owner2, approve=True)
    approval = stored(approval)
    assert approval.status == Approval.Status.REJECTED
    assert approval.decided_by == owner


@pytest.mark.django_db
def test_a_stale_copy_cannot_overturn_a_decision(operator, owner, owner2):
    approval = ask(operator)
    stale = stored(approval)
    decide_approval(approval, user=owner, approve=True)
    with pytest.raises(ApprovalError, match="already approved"):
        decide_approval(stale, user=owner2, approve=False)
    assert stored(approval).decided_by == owner


# Waiters and the audit trail.


@pytest.mark.django_db
def test_an_approval_calls_the_waiter_exactly_once(
    operator, owner, waiter, django_capture_on_commit_callbacks
):
    approval = ask(operator)
    with django_capture_on_commit_callbacks(execute=True):
        decide_approval(approval, user=owner, approve=True)
    assert waiter.calls == [(approval.pk, Approval.Status.APPROVED)]


@pytest.mark.django_db
def test_a_rejection_calls_the_waiter_exactly_once(
    operator, owner, waiter, django_capture_on_commit_callbacks
):
    approval = ask(operator)
    with django_capture_on_commit_callbacks(execute=True):
        decide_approval(approval, user=owner, approve=False)
    assert waiter.calls == [(approval.pk, Approval.Status.REJECTED)]


@pytest.mark.django_db
def test_the_waiter_is_called_only_after_the_decision_commits(
    operator, owner, waiter, django_capture_on_commit_callbacks
):
    approval = ask(operator)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        decide_approval(approval, user=owner, approve=True)
    assert waiter.calls == []
    for callback in callbacks:
        callback()
    assert waiter.calls == [(approval.pk, Approval.Status.APPROVED)]


@pytest.mark.django_db
def test_a_waiter_for_another_action_is_not_called(
    operator, owner, django_capture_on_commit_callbacks
):
    other = Waiter()
    register_waiter("test.other-action", other)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            decide_approval(ask(operator), user=owner, approve=True)
    finally:
        unregister_waiter("test.other-action", other)
    assert other.calls == []


@pytest.mark.django_db
def test_registering_a_waiter_twice_still_calls_it_once(
    operator, owner, waiter, django_capture_on_commit_callbacks
):
    register_waiter(ACTION, waiter)
    approval = ask(operator)
    with django_capture_on_commit_callbacks(execute=True):
        decide_approval(approval, user=owner, approve=True)
    assert len(waiter.calls) == 1


@pytest.mark.django_db
def test_a_failing_waiter_does_not_stop_the_others(
    operator, owner, waiter, django_capture_on_commit_callbacks
):
    def broken(approval: Approval) -> None:
        raise RuntimeError("boom")

    register_waiter(ACTION, broken)
    try:
        approval = ask(operator)
        with django_capture_on_commit_callbacks(execute=True):
            decide_approval(approval, user=owner, approve=True)
    finally:
        unregister_waiter(ACTION, broken)
    assert waiter.calls == [(approval.pk, Approval.Status.APPROVED)]
    assert stored(approval).status == Approval.Status.APPROVED


@pytest.mark.django_db
def test_an_unregistered_waiter_is_not_called(operator, owner, django_capture_on_commit_callbacks):
    waiter = Waiter()
    register_waiter(ACTION, waiter)
    unregister_waiter(ACTION, waiter)
    with django_capture_on_commit_callbacks(execute=True):
        decide_approval(ask(operator), user=owner, approve=True)
    assert waiter.calls == []


@pytest.mark.django_db
def test_an_approval_is_audited_with_its_decider(operator, owner):
    approval = decide_approval(ask(operator), user=owner, approve=True, note="ok")
    event = AuditEvent.objects.get(action="approval.approved")
    assert event.actor == owner
    assert event.actor_label == owner.username
    assert event.object_id == str(approval.pk)
    assert event.before == {"status": "pending"}
    assert event.after == {"status": "approved", "note": "ok"}


@pytest.mark.django_db
def test_a_rejection_is_audited_with_its_decider(operator, owner):
    approval = decide_approval(ask(operator), user=owner, approve=False, note="too risky")
    event = AuditEvent.objects.get(action="approval.rejected")
    assert event.actor == owner
    assert event.object_id == str(approval.pk)
    assert event.after == {"status": "rejected", "note": "too risky"}


@pytest.mark.django_db
def test_a_refused_decision_is_not_audited_as_a_decision(operator, observer):
    approval = ask(operator)
    for user in (operator, observer):
        with pytest.raises(ApprovalError):
            decide_approval(approval, user=user, approve=True)
    assert not AuditEvent.objects.filter(
        action__in=["approval.approved", "approval.rejected"]
    ).exists()


# Expiry.


@pytest.mark.django_db
def test_expire_due_approvals_marks_them_expired_and_calls_the_waiters(
    operator, waiter, django_capture_on_commit_callbacks
):
    due = ask(operator)
    later = ask(operator)
    Approval.objects.filter(pk=due.pk).update(expires_at=timezone.now() - timedelta(minutes=1))

    with django_capture_on_commit_callbacks(execute=True):
        assert expire_due_approvals() == 1

    assert stored(due).status == Approval.Status.EXPIRED
    assert stored(due).decided_at is not None
    assert stored(later).is_pending
    assert waiter.calls == [(due.pk, Approval.Status.EXPIRED)]
    event = AuditEvent.objects.get(action="approval.expired")
    assert event.object_id == str(due.pk)
    assert event.actor is None
    assert event.actor_label == "system"


@pytest.mark.django_db
def test_expiring_twice_calls_the_waiters_once(
    operator, waiter, django_capture_on_commit_callbacks
):
    due = ask(operator)
    Approval.objects.filter(pk=due.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    with django_capture_on_commit_callbacks(execute=True):
        assert expire_due_approvals() == 1
        assert expire_due_approvals() == 0
    assert waiter.calls == [(due.pk, Approval.Status.EXPIRED)]


@pytest.mark.django_db
def test_an_expired_approval_cannot_be_decided(operator, owner):
    due = ask(operator)
    Approval.objects.filter(pk=due.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    expire_due_approvals()
    with pytest.raises(ApprovalError, match="already expired"):
        decide_approval(stored(due), user=owner, approve=True)


@pytest.mark.django_db
def test_expire_due_approvals_leaves_decided_ones_alone(operator, owner, waiter):
    decided = decide_approval(ask(operator), user=owner, approve=True)
    Approval.objects.filter(pk=decided.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    assert expire_due_approvals() == 0
    assert stored(decided).status == Approval.Status.APPROVED


# The database's own guarantees.


@pytest.mark.django_db
def test_the_database_refuses_a_decision_by_the_requester(operator):
    approval = ask(operator)
    with pytest.raises(IntegrityError), transaction.atomic():
        Approval.objects.filter(pk=approval.pk).update(
            status=Approval.Status.APPROVED, decided_by=operator, decided_at=timezone.now()
        )
    assert stored(approval).is_pending


@pytest.mark.django_db
def test_the_database_refuses_money_without_the_owner_tier(operator):
    approval = ask(operator)
    with pytest.raises(IntegrityError), transaction.atomic():
        Approval.objects.filter(pk=approval.pk).update(amount=Decimal("5"))
    assert stored(approval).amount is None


# Two people decide the same approval at the same moment.

RACE_ROUNDS = 20
# Waits on the other thread only keep a broken test from hanging: never a bound on speed.
HANG_GUARD_SECONDS = 120


def _decide_in_thread(
    approval_id: int,
    user_id: int,
    approve: bool,
    barrier: threading.Barrier,
    outcomes: list[str],
) -> None:
    try:
        approval = Approval.objects.get(pk=approval_id)
        user = get_user_model().objects.get(pk=user_id)
        user.has_perm("controlplane.decide_approval")  # warm the permission cache
        barrier.wait(timeout=HANG_GUARD_SECONDS)
        try:
            decide_approval(approval, user=user, approve=approve)
        except ApprovalError:
            outcomes.append("refused")
        else:
            outcomes.append("won")
    except Exception as exc:  # surfaced in the main thread's assertions
        outcomes.append(f"crashed: {exc!r}")
    finally:
        connection.close()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_staff_deciding_at_once_give_exactly_one_decision_and_one_waiter_call(
    operator, owner, owner2, waiter
):
    skip_unless_postgres()
    for round_number in range(RACE_ROUNDS):
        approval = ask(operator)
        barrier = threading.Barrier(2)
        outcomes: list[str] = []
        threads = [
            threading.Thread(
                target=_decide_in_thread,
                args=(approval.pk, user.pk, approve, barrier, outcomes),
            )
            for user, approve in ((owner, True), (owner2, round_number % 2 == 0))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=HANG_GUARD_SECONDS)

        assert sorted(outcomes) == ["refused", "won"], f"round {round_number}: {outcomes}"
        approval = stored(approval)
        assert approval.status in (Approval.Status.APPROVED, Approval.Status.REJECTED)
        assert approval.decided_by_id in (owner.pk, owner2.pk)
        calls = [call for call in waiter.calls if call[0] == approval.pk]
        assert calls == [(approval.pk, approval.status)], f"round {round_number}: {calls}"
        decisions = AuditEvent.objects.filter(
            action__in=["approval.approved", "approval.rejected"], object_id=str(approval.pk)
        )
        assert decisions.count() == 1
    assert len(waiter.calls) == RACE_ROUNDS
