from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import DatabaseError, connection, transaction

from controlplane.audit import REDACTED, acting_as, record
from controlplane.models import AppendOnlyError, AuditEvent, FeatureToggle, NotificationChannel

pytestmark = pytest.mark.django_db

WEBHOOK = "https://hooks.example.com/services/T000/B000/very-secret-token"
OTHER_WEBHOOK = "https://hooks.example.com/services/T111/B111/another-secret"


def skip_unless_postgres() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (set DATABASE_URL)")


def events_for(instance: Any) -> Any:
    return AuditEvent.objects.filter(
        content_type=ContentType.objects.get_for_model(instance), object_id=str(instance.pk)
    ).order_by("id")


def make_channel(**fields: Any) -> NotificationChannel:
    defaults = {"name": "ops-discord", "kind": NotificationChannel.Kind.DISCORD, "target": WEBHOOK}
    return NotificationChannel.objects.create(**{**defaults, **fields})


def assert_no_plaintext(event: AuditEvent, *secrets: str) -> None:
    written = json.dumps([event.before, event.after, event.object_repr])
    for secret in secrets:
        assert secret not in written


# Feature toggles.


def test_creating_a_toggle_is_audited_with_actor_address_and_after(owner):
    with acting_as(owner, "10.0.0.1"):
        toggle = FeatureToggle.objects.create(key="agents.autopilot", description="Autopilot")
    event = events_for(toggle).get()
    assert event.action == "featuretoggle.created"
    assert event.actor == owner
    assert event.actor_label == owner.username
    assert event.client_address == "10.0.0.1"
    assert event.object_repr == "agents.autopilot"
    assert event.before is None
    assert event.after["key"] == "agents.autopilot"
    assert event.after["enabled"] is False
    assert event.after["locked"] is False
    assert event.after["description"] == "Autopilot"


def test_changing_a_toggle_records_only_the_changed_fields(owner):
    toggle = FeatureToggle.objects.create(key="agents.autopilot", description="Autopilot")
    with acting_as(owner, "10.0.0.1"):
        toggle.enabled = True
        toggle.save()
    event = events_for(toggle).get(action="featuretoggle.changed")
    assert event.actor == owner
    assert event.client_address == "10.0.0.1"
    # updated_at moves with every save, so it is a changed field too.
    assert set(event.before) == set(event.after) == {"enabled", "updated_at"}
    assert event.before["enabled"] is False
    assert event.after["enabled"] is True
    assert event.before["updated_at"] != event.after["updated_at"]


def test_saving_a_toggle_with_nothing_changed_but_its_timestamp_records_only_the_timestamp():
    toggle = FeatureToggle.objects.create(key="agents.autopilot")
    toggle.save()
    event = events_for(toggle).get(action="featuretoggle.changed")
    assert set(event.after) == {"updated_at"}


def test_deleting_a_toggle_is_audited_with_before(owner):
    toggle = FeatureToggle.objects.create(key="agents.autopilot", enabled=True)
    pk = toggle.pk
    with acting_as(owner, "10.0.0.1"):
        toggle.delete()
    event = AuditEvent.objects.get(action="featuretoggle.deleted")
    assert event.object_id == str(pk)
    assert event.object_repr == "agents.autopilot"
    assert event.actor == owner
    assert event.client_address == "10.0.0.1"
    assert event.before["enabled"] is True
    assert event.before["key"] == "agents.autopilot"
    assert event.after is None


def test_a_queryset_update_is_audited_row_by_row(owner):
    first = FeatureToggle.objects.create(key="a.one")
    second = FeatureToggle.objects.create(key="a.two")
    with acting_as(owner):
        assert FeatureToggle.objects.filter(key__startswith="a.").update(enabled=True) == 2
    for toggle in (first, second):
        event = events_for(toggle).get(action="featuretoggle.changed")
        assert event.actor == owner
        assert event.before["enabled"] is False
        assert event.after["enabled"] is True


def test_a_queryset_delete_is_audited_row_by_row(owner):
    FeatureToggle.objects.create(key="a.one")
    FeatureToggle.objects.create(key="a.two")
    with acting_as(owner):
        count, _ = FeatureToggle.objects.filter(key__startswith="a.").delete()
    assert count == 2
    deleted = AuditEvent.objects.filter(action="featuretoggle.deleted", actor=owner)
    assert sorted(deleted.values_list("object_repr", flat=True)) == ["a.one", "a.two"]


def test_a_change_outside_any_context_is_attributed_to_the_system():
    toggle = FeatureToggle.objects.create(key="agents.autopilot")
    event = events_for(toggle).get()
    assert event.actor is None
    assert event.actor_label == "system"
    assert event.client_address is None


def test_acting_as_an_anonymous_user_is_attributed_to_the_system():
    from django.contrib.auth.models import AnonymousUser

    with acting_as(AnonymousUser(), "10.0.0.9"):
        toggle = FeatureToggle.objects.create(key="agents.autopilot")
    event = events_for(toggle).get()
    assert event.actor is None
    assert event.actor_label == "system"
    assert event.client_address == "10.0.0.9"


def test_the_audit_context_ends_with_the_block(owner):
    with acting_as(owner, "10.0.0.1"):
        pass
    toggle = FeatureToggle.objects.create(key="agents.autopilot")
    event = events_for(toggle).get()
    assert event.actor is None
    assert event.client_address is None


# Notification channels: the target is a secret.


def test_creating_a_channel_is_audited_with_its_target_redacted(owner):
    with acting_as(owner, "10.0.0.1"):
        channel = make_channel()
    event = events_for(channel).get()
    assert event.action == "notificationchannel.created"
    assert event.actor == owner
    assert event.client_address == "10.0.0.1"
    assert event.after["name"] == "ops-discord"
    assert event.after["kind"] == "discord"
    assert event.after["target"] == REDACTED
    assert_no_plaintext(event, WEBHOOK)


def test_changing_a_channel_records_only_the_changed_fields(owner):
    channel = make_channel()
    with acting_as(owner, "10.0.0.1"):
        channel.enabled = False
        channel.save()
    event = events_for(channel).get(action="notificationchannel.changed")
    assert event.actor == owner
    assert event.client_address == "10.0.0.1"
    assert event.before == {"enabled": True}
    assert event.after == {"enabled": False}


def test_changing_a_channel_target_is_audited_without_the_plaintext(owner):
    channel = make_channel()
    with acting_as(owner, "10.0.0.1"):
        channel.target = OTHER_WEBHOOK
        channel.save()
    event = events_for(channel).get(action="notificationchannel.changed")
    assert event.actor == owner
    assert event.before == {"target": REDACTED}
    assert event.after == {"target": REDACTED}
    assert_no_plaintext(event, WEBHOOK, OTHER_WEBHOOK)
    channel.refresh_from_db()
    assert channel.target == OTHER_WEBHOOK


def test_deleting_a_channel_is_audited_with_its_target_redacted(owner):
    channel = make_channel()
    with acting_as(owner, "10.0.0.1"):
        channel.delete()
    event = AuditEvent.objects.get(action="notificationchannel.deleted")
    assert event.actor == owner
    assert event.client_address == "10.0.0.1"
    assert event.before["name"] == "ops-discord"
    assert event.before["target"] == REDACTED
    assert event.after is None
    assert_no_plaintext(event, WEBHOOK)


def test_no_audit_event_ever_holds_a_channel_target_in_plaintext(owner):
    with acting_as(owner):
        channel = make_channel()
        channel.target = OTHER_WEBHOOK
        channel.kind = NotificationChannel.Kind.WEBHOOK
        channel.save()
        NotificationChannel.objects.filter(pk=channel.pk).update(enabled=False)
        channel.refresh_from_db()
        channel.delete()
    events = AuditEvent.objects.filter(action__startswith="notificationchannel.")
    assert list(events.order_by("id").values_list("action", flat=True)) == [
        "notificationchannel.created",
        "notificationchannel.changed",
        "notificationchannel.changed",
        "notificationchannel.deleted",
    ]
    for event in events:
        assert_no_plaintext(event, WEBHOOK, OTHER_WEBHOOK)


# The trail is append-only.


@pytest.fixture
def event(owner: Any) -> AuditEvent:
    return record("test.something", actor=owner, after={"n": 1})


def test_an_audit_event_cannot_be_saved_again(event):
    event.action = "test.rewritten"
    with pytest.raises(AppendOnlyError):
        event.save()
    assert AuditEvent.objects.get(pk=event.pk).action == "test.something"


def test_an_audit_event_cannot_be_deleted(event):
    with pytest.raises(AppendOnlyError):
        event.delete()
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_audit_events_cannot_be_updated_through_a_queryset(event):
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).update(action="test.rewritten")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.update(action="test.rewritten")
    assert AuditEvent.objects.get(pk=event.pk).action == "test.something"


def test_audit_events_cannot_be_deleted_through_a_queryset(event):
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_audit_events_cannot_be_bulk_updated(event):
    event.action = "test.rewritten"
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.bulk_update([event], ["action"])
    assert AuditEvent.objects.get(pk=event.pk).action == "test.something"


@pytest.mark.postgres
def test_the_database_refuses_a_raw_update_of_the_audit_trail(event):
    skip_unless_postgres()
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(
            "UPDATE controlplane_auditevent SET action = %s WHERE id = %s",
            ["test.rewritten", event.pk],
        )
    assert AuditEvent.objects.get(pk=event.pk).action == "test.something"


@pytest.mark.postgres
def test_the_database_refuses_a_raw_delete_of_the_audit_trail(event):
    skip_unless_postgres()
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("DELETE FROM controlplane_auditevent WHERE id = %s", [event.pk])
    assert AuditEvent.objects.filter(pk=event.pk).exists()


@pytest.mark.postgres
def test_the_database_refuses_an_update_through_the_base_manager(event):
    skip_unless_postgres()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent._base_manager.filter(pk=event.pk).update(action="test.rewritten")
    assert AuditEvent.objects.get(pk=event.pk).action == "test.something"
