"""A locked toggle is refused by the database too (PostgreSQL's trigger), whichever
path goes around the model; the unlock command's one change gets through; and a
refusal's audit event outlives the caller's rollback (both databases)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, models, transaction

from controlplane.audit import acting_as, wait_for_refusal_events
from controlplane.models import AuditEvent, FeatureToggle, ToggleLocked


def make_locked_toggle(key: str = "agents.autopilot") -> FeatureToggle:
    return FeatureToggle.objects.create(key=key, enabled=True, locked=True)


def stored(toggle: FeatureToggle) -> FeatureToggle:
    return FeatureToggle._base_manager.get(pk=toggle.pk)


def refusals(toggle: FeatureToggle) -> Any:
    return AuditEvent.objects.filter(
        action="featuretoggle.change_refused", object_id=str(toggle.pk)
    )


def run_sql(sql: str, params: list[Any]) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def base_manager_update(toggle: FeatureToggle) -> None:
    FeatureToggle._base_manager.filter(pk=toggle.pk).update(enabled=False)


def base_class_queryset_update(toggle: FeatureToggle) -> None:
    models.QuerySet.update(FeatureToggle.objects.filter(pk=toggle.pk), enabled=False)


def base_class_save(toggle: FeatureToggle) -> None:
    toggle.enabled = False
    models.Model.save(toggle)


def raw_update(toggle: FeatureToggle) -> None:
    run_sql("UPDATE controlplane_featuretoggle SET enabled = false WHERE id = %s", [toggle.pk])


def raw_unlock_and_change(toggle: FeatureToggle) -> None:
    run_sql(
        "UPDATE controlplane_featuretoggle SET enabled = false, locked = false WHERE id = %s",
        [toggle.pk],
    )


def base_manager_delete(toggle: FeatureToggle) -> None:
    FeatureToggle._base_manager.filter(pk=toggle.pk).delete()


def base_class_delete(toggle: FeatureToggle) -> None:
    models.Model.delete(toggle)


def raw_delete(toggle: FeatureToggle) -> None:
    run_sql("DELETE FROM controlplane_featuretoggle WHERE id = %s", [toggle.pk])


def raw_truncate(toggle: FeatureToggle) -> None:
    run_sql("TRUNCATE controlplane_featuretoggle", [])


def under_the_unlock_setting(
    change: Callable[[FeatureToggle], None], toggle: FeatureToggle
) -> None:
    run_sql("SELECT set_config('controlplane.toggle_unlock', 'on', true)", [])
    change(toggle)


def save_beside_other_work(toggle: FeatureToggle) -> None:
    FeatureToggle.objects.create(key="agents.other")
    toggle.enabled = False
    toggle.save()


AROUND_THE_MODEL = [
    base_manager_update,
    base_class_queryset_update,
    base_class_save,
    raw_update,
    raw_unlock_and_change,
    base_manager_delete,
    base_class_delete,
    raw_delete,
    raw_truncate,
]


@pytest.mark.postgres
@pytest.mark.django_db
@pytest.mark.parametrize("change", AROUND_THE_MODEL, ids=lambda change: change.__name__)
def test_the_database_refuses_any_change_to_a_locked_toggle(
    change: Callable[[FeatureToggle], None],
):
    toggle = make_locked_toggle()
    with pytest.raises(DatabaseError, match="locked"), transaction.atomic():
        change(toggle)
    kept = stored(toggle)
    assert (kept.enabled, kept.locked) == (True, True)


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_database_refusal_names_the_command_that_unlocks_the_toggle():
    toggle = make_locked_toggle("agents.autopilot")
    with pytest.raises(DatabaseError) as refused, transaction.atomic():
        raw_update(toggle)
    assert (
        "feature toggle agents.autopilot is locked: UPDATE refused "
        "(bin/manage toggle unlock agents.autopilot --reason ...)"
    ) in str(refused.value)


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_unlock_setting_lets_through_unlocking_and_nothing_else():
    toggle = make_locked_toggle()
    with pytest.raises(DatabaseError, match="locked"), transaction.atomic():
        under_the_unlock_setting(raw_unlock_and_change, toggle)
    with pytest.raises(DatabaseError, match="locked"), transaction.atomic():
        under_the_unlock_setting(raw_delete, toggle)
    assert stored(toggle).locked is True


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)  # a transaction of its own, not a savepoint
def test_the_unlock_setting_ends_with_its_transaction():
    toggle = make_locked_toggle()
    with transaction.atomic():
        run_sql("SELECT set_config('controlplane.toggle_unlock', 'on', true)", [])
    with pytest.raises(DatabaseError, match="locked"), transaction.atomic():
        run_sql("UPDATE controlplane_featuretoggle SET locked = false WHERE id = %s", [toggle.pk])
    assert stored(toggle).locked is True


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_database_lets_unlocked_toggles_change_and_be_locked():
    toggle = FeatureToggle.objects.create(key="agents.autopilot", enabled=True)
    raw_update(toggle)
    FeatureToggle._base_manager.filter(pk=toggle.pk).update(locked=True)
    kept = stored(toggle)
    assert (kept.enabled, kept.locked) == (False, True)


@pytest.mark.django_db
def test_the_unlock_command_still_unlocks_a_locked_toggle():
    toggle = make_locked_toggle()
    call_command("toggle", "unlock", toggle.key, "--reason", "Incident 42 is over")
    assert stored(toggle).locked is False
    assert AuditEvent.objects.filter(action="featuretoggle.unlocked").count() == 1


# A refusal's audit event outlives the caller's rollback.


@pytest.mark.django_db(transaction=True)
def test_a_refusal_inside_a_transaction_the_caller_rolls_back_is_still_audited(superuser):
    toggle = make_locked_toggle()
    with acting_as(superuser, "10.0.0.1"), pytest.raises(ToggleLocked), transaction.atomic():
        save_beside_other_work(toggle)
    wait_for_refusal_events()
    assert not FeatureToggle.objects.filter(key="agents.other").exists()
    refusal = refusals(toggle).get()
    assert refusal.actor == superuser
    assert refusal.client_address == "10.0.0.1"
    assert refusal.after == {"enabled": False, "locked": True}


@pytest.mark.django_db(transaction=True)
def test_a_refused_delete_inside_a_rolled_back_transaction_is_still_audited(superuser):
    toggle = make_locked_toggle()
    with acting_as(superuser), pytest.raises(ToggleLocked), transaction.atomic():
        toggle.delete()
    wait_for_refusal_events()
    assert refusals(toggle).get().actor == superuser
    assert stored(toggle).locked is True


@pytest.mark.django_db(transaction=True)
def test_a_refusal_outside_any_transaction_is_audited_once():
    toggle = make_locked_toggle()
    toggle.enabled = False
    with pytest.raises(ToggleLocked):
        toggle.save()
    wait_for_refusal_events()
    assert refusals(toggle).count() == 1
