from __future__ import annotations

import re
from typing import Any

import pytest
from django.core.cache import cache
from django.core.exceptions import ValidationError

from controlplane.approvals import ApprovalError, decide_approval
from controlplane.audit import acting_as, wait_for_refusal_events
from controlplane.models import Approval, AuditEvent, FeatureToggle, ToggleLocked, toggle_enabled
from controlplane.toggle_changes import request_toggle_change

pytestmark = pytest.mark.django_db


def make_toggle(key: str = "agents.autopilot", **fields: Any) -> FeatureToggle:
    return FeatureToggle.objects.create(key=key, **fields)


def make_locked_toggle(key: str = "agents.autopilot", enabled: bool = True) -> FeatureToggle:
    return make_toggle(key, enabled=enabled, locked=True)


def refusals(toggle: FeatureToggle) -> Any:
    return AuditEvent.objects.filter(
        action="featuretoggle.change_refused", object_id=str(toggle.pk)
    )


def stored(toggle: FeatureToggle) -> FeatureToggle:
    return FeatureToggle.objects.get(pk=toggle.pk)


def assert_clear_lock_message(exc: ToggleLocked, key: str) -> None:
    assert exc.key == key
    assert f"Feature toggle '{key}' is locked" in exc.message
    assert f"bin/manage toggle unlock {key} --reason" in exc.message


# Locked toggles: every path refuses, superusers included, and each refusal is audited.


def test_a_locked_toggle_refuses_an_orm_save_even_from_a_superuser(superuser):
    toggle = make_locked_toggle()
    toggle.enabled = False
    with acting_as(superuser, "10.0.0.1"), pytest.raises(ToggleLocked) as caught:
        toggle.save()
    assert_clear_lock_message(caught.value, toggle.key)
    assert stored(toggle).enabled is True
    refusal = refusals(toggle).get()
    assert refusal.actor == superuser
    assert refusal.client_address == "10.0.0.1"
    assert refusal.after == {"enabled": False, "locked": True}


def test_a_locked_toggle_refuses_a_save_that_would_unlock_it(owner):
    toggle = make_locked_toggle()
    toggle.locked = False
    with acting_as(owner), pytest.raises(ToggleLocked):
        toggle.save()
    assert stored(toggle).locked is True
    assert refusals(toggle).count() == 1


def test_a_stale_instance_cannot_change_a_toggle_locked_since_it_was_loaded():
    toggle = make_toggle(enabled=True)
    stale = stored(toggle)
    toggle.locked = True
    toggle.save()
    stale.enabled = False
    with pytest.raises(ToggleLocked):
        stale.save()
    assert stored(toggle).enabled is True
    assert refusals(toggle).count() == 1


def test_a_locked_toggle_refuses_a_queryset_update(superuser):
    toggle = make_locked_toggle()
    with acting_as(superuser), pytest.raises(ToggleLocked) as caught:
        FeatureToggle.objects.filter(pk=toggle.pk).update(enabled=False)
    assert_clear_lock_message(caught.value, toggle.key)
    assert stored(toggle).enabled is True
    assert refusals(toggle).get().actor == superuser


def test_a_queryset_update_touching_a_locked_toggle_changes_no_row_at_all():
    locked = make_locked_toggle("a.locked")
    free = make_toggle("b.free", enabled=True)
    with pytest.raises(ToggleLocked):
        FeatureToggle.objects.filter(key__in=["a.locked", "b.free"]).update(enabled=False)
    assert stored(locked).enabled is True
    assert stored(free).enabled is True
    assert refusals(locked).count() == 1


def test_a_locked_toggle_refuses_a_queryset_update_that_would_unlock_it():
    toggle = make_locked_toggle()
    with pytest.raises(ToggleLocked):
        FeatureToggle.objects.filter(pk=toggle.pk).update(locked=False)
    assert stored(toggle).locked is True
    assert refusals(toggle).count() == 1


def test_a_locked_toggle_refuses_bulk_update(superuser):
    toggle = make_locked_toggle()
    toggle.enabled = False
    with acting_as(superuser), pytest.raises(ToggleLocked) as caught:
        FeatureToggle.objects.bulk_update([toggle], ["enabled"])
    assert_clear_lock_message(caught.value, toggle.key)
    assert stored(toggle).enabled is True
    assert refusals(toggle).get().actor == superuser


# update_or_create runs in a transaction of its own, so the refusal is written on a
# connection of its own (audit.record_refusal), which sees only committed rows.
@pytest.mark.django_db(transaction=True)
def test_a_locked_toggle_refuses_update_or_create():
    toggle = make_locked_toggle()
    with pytest.raises(ToggleLocked):
        FeatureToggle.objects.update_or_create(key=toggle.key, defaults={"enabled": False})
    assert stored(toggle).enabled is True
    wait_for_refusal_events()
    assert refusals(toggle).count() == 1


def test_a_locked_toggle_refuses_delete(superuser):
    toggle = make_locked_toggle()
    with acting_as(superuser), pytest.raises(ToggleLocked) as caught:
        toggle.delete()
    assert_clear_lock_message(caught.value, toggle.key)
    assert FeatureToggle.objects.filter(pk=toggle.pk).exists()
    assert refusals(toggle).get().actor == superuser
    assert not AuditEvent.objects.filter(action="featuretoggle.deleted").exists()


def test_a_locked_toggle_refuses_a_queryset_delete(superuser):
    toggle = make_locked_toggle()
    free = make_toggle("b.free")
    with acting_as(superuser), pytest.raises(ToggleLocked) as caught:
        FeatureToggle.objects.filter(key__in=[toggle.key, free.key]).delete()
    assert_clear_lock_message(caught.value, toggle.key)
    assert FeatureToggle.objects.filter(pk__in=[toggle.pk, free.pk]).count() == 2
    assert refusals(toggle).get().actor == superuser


def test_a_locked_toggle_fails_model_validation_so_forms_show_why():
    toggle = make_locked_toggle()
    toggle.enabled = False
    with pytest.raises(
        ValidationError, match=re.escape(f"Feature toggle '{toggle.key}' is locked")
    ):
        toggle.full_clean()
    assert refusals(toggle).count() == 1


def test_an_unlocked_toggle_can_be_locked_and_then_no_longer_changed(owner):
    toggle = make_toggle(enabled=True)
    with acting_as(owner):
        toggle.locked = True
        toggle.save()
        toggle.enabled = False
        with pytest.raises(ToggleLocked):
            toggle.save()
    assert stored(toggle).enabled is True
    assert AuditEvent.objects.filter(action="featuretoggle.changed", actor=owner).count() == 1


def test_unlocking_through_the_queryset_is_audited_and_frees_the_toggle():
    toggle = make_locked_toggle()
    FeatureToggle.objects.unlock(toggle.key, reason="Incident 42 is over")
    assert stored(toggle).locked is False
    event = AuditEvent.objects.get(action="featuretoggle.unlocked")
    assert event.object_id == str(toggle.pk)
    assert event.before == {"locked": True}
    assert event.after == {"locked": False, "reason": "Incident 42 is over"}
    toggle = stored(toggle)
    toggle.enabled = False
    toggle.save()
    assert stored(toggle).enabled is False


# The change request flow.


def test_an_operator_cannot_request_a_change_to_a_locked_toggle(operator):
    toggle = make_locked_toggle()
    with pytest.raises(ApprovalError, match="is locked and cannot be changed by anyone"):
        request_toggle_change(toggle, enabled=False, user=operator, reason="please")
    assert not Approval.objects.exists()
    refusal = refusals(toggle).get()
    assert refusal.actor == operator
    assert refusal.after == {"enabled": False, "locked": True}


def test_a_change_request_from_a_stale_copy_of_a_since_locked_toggle_is_refused(operator):
    toggle = make_toggle(enabled=True)
    stale = stored(toggle)
    toggle.locked = True
    toggle.save()
    with pytest.raises(ApprovalError, match="is locked and cannot be changed by anyone"):
        request_toggle_change(stale, enabled=False, user=operator, reason="please")
    assert not Approval.objects.exists()
    assert refusals(toggle).get().actor == operator


def test_a_change_request_to_the_current_state_is_refused(operator):
    toggle = make_toggle(enabled=True)
    with pytest.raises(ApprovalError, match="already on"):
        request_toggle_change(toggle, enabled=True, user=operator, reason="please")
    assert not Approval.objects.exists()


def test_an_operator_requests_a_change_and_an_owner_approves_it(
    operator, owner, django_capture_on_commit_callbacks
):
    toggle = make_toggle(enabled=False)
    approval = request_toggle_change(toggle, enabled=True, user=operator, reason="Roll out")
    assert approval.required_tier == Approval.RequiredTier.OWNER
    assert approval.requested_by == operator
    assert approval.proposal == {"key": toggle.key, "enabled": True}
    assert approval.subject == toggle
    assert stored(toggle).enabled is False

    with django_capture_on_commit_callbacks(execute=True):
        decide_approval(approval, user=owner, approve=True, note="go")

    assert stored(toggle).enabled is True
    change = AuditEvent.objects.get(action="featuretoggle.changed", object_id=str(toggle.pk))
    assert change.actor == owner
    assert change.actor_label == owner.username
    assert change.before["enabled"] is False
    assert change.after["enabled"] is True
    approval.refresh_from_db()
    assert approval.status == Approval.Status.APPROVED
    assert approval.outcome == f"'{toggle.key}' turned on."


def test_an_operator_cannot_approve_a_toggle_change(operator, operator2):
    toggle = make_toggle(enabled=False)
    approval = request_toggle_change(toggle, enabled=True, user=operator, reason="Roll out")
    with pytest.raises(ApprovalError, match="needs the Owner tier"):
        decide_approval(approval, user=operator2, approve=True)
    assert stored(toggle).enabled is False
    approval.refresh_from_db()
    assert approval.is_pending


def test_a_rejected_toggle_change_changes_nothing(
    operator, owner, django_capture_on_commit_callbacks
):
    toggle = make_toggle(enabled=False)
    approval = request_toggle_change(toggle, enabled=True, user=operator, reason="Roll out")
    with django_capture_on_commit_callbacks(execute=True):
        decide_approval(approval, user=owner, approve=False, note="not now")
    assert stored(toggle).enabled is False
    assert not AuditEvent.objects.filter(action="featuretoggle.changed").exists()
    approval.refresh_from_db()
    assert approval.status == Approval.Status.REJECTED
    assert approval.outcome == ""


# The change is applied in a transaction that the refusal rolls back: the refusal is
# written on a connection of its own, which sees only committed rows.
@pytest.mark.django_db(transaction=True)
def test_an_approved_change_to_a_toggle_locked_after_the_request_is_not_applied(
    operator, owner, django_capture_on_commit_callbacks
):
    toggle = make_toggle(enabled=False)
    approval = request_toggle_change(toggle, enabled=True, user=operator, reason="Roll out")
    toggle.locked = True
    toggle.save()

    with django_capture_on_commit_callbacks(execute=True):
        decide_approval(approval, user=owner, approve=True)

    assert stored(toggle).enabled is False
    approval.refresh_from_db()
    assert approval.status == Approval.Status.APPROVED
    assert approval.outcome.startswith("Not applied: ")
    assert f"Feature toggle '{toggle.key}' is locked" in approval.outcome
    wait_for_refusal_events()
    refusal = refusals(toggle).get()
    assert refusal.actor == owner
    assert refusal.after == {"enabled": True, "locked": True}


def test_an_approved_change_to_a_deleted_toggle_is_not_applied(
    operator, owner, django_capture_on_commit_callbacks
):
    toggle = make_toggle(enabled=False)
    approval = request_toggle_change(toggle, enabled=True, user=operator, reason="Roll out")
    toggle.delete()
    with django_capture_on_commit_callbacks(execute=True):
        decide_approval(approval, user=owner, approve=True)
    approval.refresh_from_db()
    assert approval.outcome == f"Not applied: toggle '{toggle.key}' no longer exists."


# Reading toggles: cached, invalidated on change.


def test_reading_a_missing_toggle_returns_the_default():
    assert toggle_enabled("no.such.toggle") is False
    assert toggle_enabled("no.such.toggle", default=True) is True


def test_a_missing_toggle_reads_as_the_default_each_time_even_once_cached():
    assert toggle_enabled("no.such.toggle", default=True) is True
    assert cache.get(FeatureToggle.cache_key("no.such.toggle")) is not None
    assert toggle_enabled("no.such.toggle", default=False) is False


def test_toggle_enabled_reads_the_stored_state():
    make_toggle("on.toggle", enabled=True)
    make_toggle("off.toggle", enabled=False)
    assert toggle_enabled("on.toggle") is True
    assert toggle_enabled("off.toggle", default=True) is False


def test_toggle_enabled_is_cached(django_assert_num_queries):
    make_toggle(enabled=True)
    with django_assert_num_queries(1):
        assert toggle_enabled("agents.autopilot") is True
    with django_assert_num_queries(0):
        assert toggle_enabled("agents.autopilot") is True
        assert toggle_enabled("agents.autopilot") is True


def test_a_change_invalidates_the_cache_and_the_next_read_sees_it(
    django_capture_on_commit_callbacks,
):
    toggle = make_toggle(enabled=False)
    cache_key = FeatureToggle.cache_key(toggle.key)
    assert toggle_enabled(toggle.key) is False
    assert cache.get(cache_key) is not None

    with django_capture_on_commit_callbacks(execute=True):
        toggle.enabled = True
        toggle.save()

    assert cache.get(cache_key) is True  # the committed state, published for every process
    assert toggle_enabled(toggle.key) is True


def test_a_queryset_update_invalidates_the_cache(django_capture_on_commit_callbacks):
    toggle = make_toggle(enabled=True)
    assert toggle_enabled(toggle.key) is True
    with django_capture_on_commit_callbacks(execute=True):
        FeatureToggle.objects.filter(pk=toggle.pk).update(enabled=False)
    assert cache.get(FeatureToggle.cache_key(toggle.key)) is False
    assert toggle_enabled(toggle.key) is False


def test_creating_a_toggle_invalidates_a_cached_miss(django_capture_on_commit_callbacks):
    assert toggle_enabled("new.toggle") is False
    with django_capture_on_commit_callbacks(execute=True):
        make_toggle("new.toggle", enabled=True)
    assert cache.get(FeatureToggle.cache_key("new.toggle")) is True
    assert toggle_enabled("new.toggle") is True


def test_deleting_a_toggle_invalidates_the_cache(django_capture_on_commit_callbacks):
    toggle = make_toggle(enabled=True)
    assert toggle_enabled(toggle.key) is True
    with django_capture_on_commit_callbacks(execute=True):
        toggle.delete()
    assert cache.get(FeatureToggle.cache_key(toggle.key)) is not True
    assert toggle_enabled(toggle.key, default=False) is False


def test_unlocking_invalidates_the_cache(django_capture_on_commit_callbacks):
    toggle = make_locked_toggle()
    assert toggle_enabled(toggle.key) is True
    with django_capture_on_commit_callbacks(execute=True):
        FeatureToggle.objects.unlock(toggle.key, reason="maintenance")
    assert cache.get(FeatureToggle.cache_key(toggle.key)) is True
    toggle.refresh_from_db()
    toggle.enabled = False
    with django_capture_on_commit_callbacks(execute=True):
        toggle.save()
    assert toggle_enabled(toggle.key) is False


def test_a_refused_change_leaves_the_cached_state_in_place(django_capture_on_commit_callbacks):
    toggle = make_locked_toggle()
    assert toggle_enabled(toggle.key) is True
    toggle.enabled = False
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(ToggleLocked):
        toggle.save()
    assert toggle_enabled(toggle.key) is True


def test_the_cache_is_dropped_only_once_the_change_commits(
    django_capture_on_commit_callbacks,
):
    toggle = make_toggle(enabled=False)
    assert toggle_enabled(toggle.key) is False
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        toggle.enabled = True
        toggle.save()
    assert cache.get(FeatureToggle.cache_key(toggle.key)) is not None
    for callback in callbacks:
        callback()
    assert toggle_enabled(toggle.key) is True


def test_renaming_a_toggle_forgets_the_old_key(django_capture_on_commit_callbacks):
    toggle = make_toggle("old.name", enabled=True)
    assert toggle_enabled("old.name") is True
    with django_capture_on_commit_callbacks(execute=True):
        toggle.key = "new.name"
        toggle.save()
    assert toggle_enabled("old.name", default=False) is False
    assert toggle_enabled("new.name") is True


def test_a_reader_that_fetched_before_a_change_cannot_cache_the_old_state(
    django_capture_on_commit_callbacks,
):
    toggle = make_toggle(enabled=False)
    with django_capture_on_commit_callbacks(execute=True):
        toggle.enabled = True
        toggle.save()
    # A reader that read the old row before the commit now tries to cache it.
    cache.add(FeatureToggle.cache_key(toggle.key), False)
    assert toggle_enabled(toggle.key) is True


# Reading several toggles at once (toggles_enabled): one cache read for all.


class CountingCache:
    """Stands in for the cache in the toggles module, counting what it asks of it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(cache, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return method(*args, **kwargs)

        return counted

    @property
    def reads(self) -> list[str]:
        return [call for call in self.calls if call.startswith("get")]


@pytest.fixture
def counting_cache(monkeypatch: pytest.MonkeyPatch) -> CountingCache:
    from controlplane.models import toggles

    counting = CountingCache()
    monkeypatch.setattr(toggles, "cache", counting)
    return counting


def test_toggles_enabled_reads_several_cached_toggles_in_one_cache_read(
    counting_cache, django_assert_num_queries
):
    from controlplane.models import toggles_enabled

    make_toggle("on.toggle", enabled=True)
    make_toggle("off.toggle", enabled=False)
    defaults = {"on.toggle": False, "off.toggle": True, "no.such.toggle": True}
    toggles_enabled(defaults)  # fills the cache
    counting_cache.calls.clear()

    with django_assert_num_queries(0):
        states = toggles_enabled(defaults)

    assert states == {"on.toggle": True, "off.toggle": False, "no.such.toggle": True}
    assert counting_cache.calls == ["get_many"]


def test_toggles_enabled_reads_the_uncached_ones_in_one_query_and_caches_them(
    counting_cache, django_assert_num_queries
):
    from controlplane.models import toggles_enabled

    make_toggle("on.toggle", enabled=True)
    make_toggle("off.toggle", enabled=False)

    with django_assert_num_queries(1):
        states = toggles_enabled({"on.toggle": False, "off.toggle": True, "no.such.toggle": True})

    assert states == {"on.toggle": True, "off.toggle": False, "no.such.toggle": True}
    assert counting_cache.reads == ["get_many"]
    assert cache.get(FeatureToggle.cache_key("on.toggle")) is True
    assert cache.get(FeatureToggle.cache_key("off.toggle")) is False
    # A missing toggle is cached as missing, so it reads as each caller's default.
    assert cache.get(FeatureToggle.cache_key("no.such.toggle")) is not None
    with django_assert_num_queries(0):
        assert toggles_enabled({"no.such.toggle": False}) == {"no.such.toggle": False}


def test_toggles_enabled_reads_from_the_database_only_the_ones_not_cached(
    django_assert_num_queries,
):
    from controlplane.models import toggles_enabled

    make_toggle("cached.toggle", enabled=True)
    make_toggle("uncached.toggle", enabled=True)
    assert toggle_enabled("cached.toggle") is True
    # Changed in the database without reaching the cache (its commit never comes).
    FeatureToggle.objects.filter(key__in=["cached.toggle", "uncached.toggle"]).update(enabled=False)

    with django_assert_num_queries(1) as queries:
        states = toggles_enabled({"cached.toggle": False, "uncached.toggle": True})

    assert states == {"cached.toggle": True, "uncached.toggle": False}
    assert "cached.toggle" not in queries.captured_queries[0]["sql"].replace("uncached", "")


def test_toggles_enabled_of_nothing_is_nothing(django_assert_num_queries):
    from controlplane.models import toggles_enabled

    with django_assert_num_queries(0):
        assert toggles_enabled({}) == {}
