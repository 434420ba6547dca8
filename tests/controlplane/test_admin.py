"""The operator panel: its sections, locked toggles, approval actions, read-only
history, secret notification targets, and query counts on list pages."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext

from controlplane.approvals import decide_approval, request_approval
from controlplane.audit import wait_for_refusal_events
from controlplane.models import (
    Approval,
    AuditEvent,
    FeatureToggle,
    NotificationChannel,
    ToggleLocked,
)

WEBHOOK = "https://discord.com/api/webhooks/1234/s3cret-token-value"
SECRET_PART = "s3cret-token"


@pytest.fixture
def locked_toggle(db: Any) -> FeatureToggle:
    toggle = FeatureToggle.objects.create(key="billing.hard-stop", enabled=False)
    # Locking is the one change that goes around the model (as the toggle command does).
    FeatureToggle._base_manager.filter(pk=toggle.pk).update(locked=True)
    toggle.refresh_from_db()
    return toggle


@pytest.fixture
def channel(db: Any) -> NotificationChannel:
    return NotificationChannel.objects.create(name="ops", kind="discord", target=WEBHOOK)


def _action(action: str, *objects: Any) -> dict[str, Any]:
    return {"action": action, "_selected_action": [obj.pk for obj in objects], "index": "0"}


def _messages(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def _locked_message(toggle: FeatureToggle) -> str:
    return str(ToggleLocked(toggle.key).message)


# Sections


@pytest.mark.django_db
def test_the_admin_index_is_organised_in_three_sections(client, observer):
    client.force_login(observer)
    response = client.get("/admin/")
    assert response.status_code == 200
    sections = {
        app["name"]: [m["name"] for m in app["models"]] for app in response.context["app_list"]
    }
    assert list(sections) == ["Observability", "Control", "Intelligence"]
    assert "Audit events" in sections["Observability"]
    assert "Notification deliveries" in sections["Observability"]
    assert "Feature toggles" in sections["Control"]
    assert "Approvals" in sections["Control"]
    assert "Notification channels" in sections["Control"]
    for name in ("Observability", "Control", "Intelligence", "Audit events", "Feature toggles"):
        assert name.encode() in response.content


@pytest.mark.django_db
def test_the_admin_index_shows_each_model_under_its_section(client, owner):
    client.force_login(owner)
    content = client.get("/admin/").content.decode()
    # The index renders the sections in order, each followed by its own models.
    observability = content.index("Observability")
    control = content.index(">Control<")
    intelligence = content.index("Intelligence")
    assert observability < content.index("Audit events") < control
    assert control < content.index("Feature toggles") < intelligence


# Locked toggles


# The admin saves inside a transaction of its own, so the refusal is written on a
# connection of its own (audit.record_refusal), which sees only committed rows.
@pytest.mark.django_db(transaction=True)
def test_a_superuser_cannot_change_a_locked_toggle_in_the_admin(client, superuser, locked_toggle):
    client.force_login(superuser)
    response = client.post(
        f"/admin/controlplane/featuretoggle/{locked_toggle.pk}/change/",
        {
            "key": locked_toggle.key,
            "enabled": "on",
            "locked": "",
            "description": "forced",
            "_save": "Save",
        },
    )
    assert response.status_code == 200  # the form again, with the refusal
    form = response.context["adminform"].form
    assert _locked_message(locked_toggle) in form.non_field_errors()
    assert b"is locked and cannot be changed by anyone" in response.content
    locked_toggle.refresh_from_db()
    assert locked_toggle.enabled is False
    assert locked_toggle.locked is True
    assert locked_toggle.description == ""
    wait_for_refusal_events()
    refused = AuditEvent.objects.get(action="featuretoggle.change_refused")
    assert refused.actor == superuser
    assert refused.object_id == str(locked_toggle.pk)
    assert not AuditEvent.objects.filter(action="featuretoggle.changed").exists()


@pytest.mark.django_db
def test_a_locked_toggle_shows_every_field_read_only(client, superuser, locked_toggle):
    client.force_login(superuser)
    response = client.get(f"/admin/controlplane/featuretoggle/{locked_toggle.pk}/change/")
    assert response.status_code == 200
    assert list(response.context["adminform"].form.fields) == []


@pytest.mark.django_db
@pytest.mark.parametrize("action", ["turn_on", "turn_off"])
def test_the_toggle_actions_refuse_a_locked_toggle(client, superuser, locked_toggle, action):
    client.force_login(superuser)
    before = FeatureToggle.objects.get(pk=locked_toggle.pk).enabled
    response = client.post("/admin/controlplane/featuretoggle/", _action(action, locked_toggle))
    assert response.status_code == 302
    assert _locked_message(locked_toggle) in _messages(response)
    locked_toggle.refresh_from_db()
    assert locked_toggle.enabled is before
    assert AuditEvent.objects.filter(action="featuretoggle.change_refused").exists()
    assert not AuditEvent.objects.filter(action="featuretoggle.changed").exists()


@pytest.mark.django_db
def test_the_turn_on_action_changes_the_unlocked_toggles_and_reports_the_locked_one(
    client, owner, locked_toggle
):
    unlocked = FeatureToggle.objects.create(key="chat.streaming")
    client.force_login(owner)
    response = client.post(
        "/admin/controlplane/featuretoggle/", _action("turn_on", unlocked, locked_toggle)
    )
    messages = _messages(response)
    assert _locked_message(locked_toggle) in messages
    assert "1 toggle(s) turned on." in messages
    unlocked.refresh_from_db()
    locked_toggle.refresh_from_db()
    assert unlocked.enabled is True
    assert locked_toggle.enabled is False


@pytest.mark.django_db
def test_a_locked_toggle_cannot_be_deleted_in_the_admin_and_the_attempt_is_audited(
    client, superuser, locked_toggle
):
    client.force_login(superuser)
    response = client.post(
        f"/admin/controlplane/featuretoggle/{locked_toggle.pk}/delete/", {"post": "yes"}
    )
    assert response.status_code == 302
    assert response.url == f"/admin/controlplane/featuretoggle/{locked_toggle.pk}/change/"
    assert _locked_message(locked_toggle) in _messages(response)
    assert FeatureToggle.objects.filter(pk=locked_toggle.pk).exists()
    refused = AuditEvent.objects.get(action="featuretoggle.change_refused")
    assert refused.actor == superuser
    assert refused.object_id == str(locked_toggle.pk)
    assert not AuditEvent.objects.filter(action="featuretoggle.deleted").exists()


@pytest.mark.django_db
def test_the_delete_page_of_a_locked_toggle_says_why_without_auditing_a_look(
    client, superuser, locked_toggle
):
    client.force_login(superuser)
    response = client.get(f"/admin/controlplane/featuretoggle/{locked_toggle.pk}/delete/")
    assert response.status_code == 302
    assert _locked_message(locked_toggle) in _messages(response)
    assert not AuditEvent.objects.filter(action="featuretoggle.change_refused").exists()


@pytest.mark.django_db
def test_someone_who_may_not_delete_toggles_gets_a_403_on_a_locked_one(
    client, observer, locked_toggle
):
    client.force_login(observer)
    response = client.post(
        f"/admin/controlplane/featuretoggle/{locked_toggle.pk}/delete/", {"post": "yes"}
    )
    assert response.status_code == 403
    assert FeatureToggle.objects.filter(pk=locked_toggle.pk).exists()
    assert not AuditEvent.objects.filter(action="featuretoggle.change_refused").exists()


@pytest.mark.django_db
def test_deleting_selected_toggles_with_a_locked_one_deletes_none_and_audits_the_attempt(
    client, superuser, locked_toggle
):
    unlocked = FeatureToggle.objects.create(key="chat.streaming")
    client.force_login(superuser)
    response = client.post(
        "/admin/controlplane/featuretoggle/",
        {**_action("delete_selected", unlocked, locked_toggle), "post": "yes"},
    )
    assert response.status_code == 302
    assert _locked_message(locked_toggle) in _messages(response)
    assert FeatureToggle.objects.filter(pk__in=[unlocked.pk, locked_toggle.pk]).count() == 2
    refused = AuditEvent.objects.get(action="featuretoggle.change_refused")
    assert refused.actor == superuser
    assert refused.object_id == str(locked_toggle.pk)


@pytest.mark.django_db
def test_deleting_selected_unlocked_toggles_still_asks_and_then_deletes(client, superuser):
    unlocked = FeatureToggle.objects.create(key="chat.streaming")
    client.force_login(superuser)
    asked = client.post("/admin/controlplane/featuretoggle/", _action("delete_selected", unlocked))
    assert asked.status_code == 200
    assert asked.template_name[0].endswith("delete_selected_confirmation.html")
    done = client.post(
        "/admin/controlplane/featuretoggle/",
        {**_action("delete_selected", unlocked), "post": "yes"},
    )
    assert done.status_code == 302
    assert not FeatureToggle.objects.filter(pk=unlocked.pk).exists()
    assert AuditEvent.objects.filter(action="featuretoggle.deleted").count() == 1


# Approval actions


@pytest.mark.django_db
def test_an_operator_approves_another_persons_request_in_the_admin(client, operator, operator2):
    approval = request_approval(action="test.thing", requested_by=operator2, reason="why")
    client.force_login(operator)
    response = client.post("/admin/controlplane/approval/", _action("approve", approval))
    assert response.status_code == 302
    assert f"#{approval.pk} approved." in _messages(response)
    approval.refresh_from_db()
    assert approval.status == Approval.Status.APPROVED
    assert approval.decided_by == operator
    event = AuditEvent.objects.get(action="approval.approved")
    assert event.actor == operator
    assert event.before == {"status": "pending"}


@pytest.mark.django_db
def test_an_operator_rejects_another_persons_request_in_the_admin(client, operator, operator2):
    approval = request_approval(action="test.thing", requested_by=operator2, reason="why")
    client.force_login(operator)
    client.post("/admin/controlplane/approval/", _action("reject", approval))
    approval.refresh_from_db()
    assert approval.status == Approval.Status.REJECTED
    assert approval.decided_by == operator


@pytest.mark.django_db
def test_nobody_approves_their_own_request_in_the_admin(client, operator):
    approval = request_approval(action="test.thing", requested_by=operator, reason="why")
    client.force_login(operator)
    response = client.post("/admin/controlplane/approval/", _action("approve", approval))
    assert any("Nobody can decide their own request" in m for m in _messages(response))
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING
    assert approval.decided_by is None


@pytest.mark.django_db
def test_a_superuser_cannot_approve_their_own_request_either(client, superuser):
    approval = request_approval(action="test.thing", requested_by=superuser, reason="why")
    client.force_login(superuser)
    response = client.post("/admin/controlplane/approval/", _action("approve", approval))
    assert any("Nobody can decide their own request" in m for m in _messages(response))
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING


@pytest.mark.django_db
def test_an_operator_cannot_approve_a_request_about_money(client, operator, operator2):
    approval = request_approval(
        action="model.call", requested_by=operator2, reason="big run", amount=Decimal("12.50")
    )
    assert approval.required_tier == Approval.RequiredTier.OWNER
    client.force_login(operator)
    response = client.post("/admin/controlplane/approval/", _action("approve", approval))
    assert any("needs the Owner tier" in m and "money" in m for m in _messages(response))
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING
    assert approval.decided_by is None


@pytest.mark.django_db
def test_an_owner_approves_a_request_about_money(client, owner, operator):
    approval = request_approval(
        action="model.call", requested_by=operator, reason="big run", amount=Decimal("12.50")
    )
    client.force_login(owner)
    client.post("/admin/controlplane/approval/", _action("approve", approval))
    approval.refresh_from_db()
    assert approval.status == Approval.Status.APPROVED
    assert approval.decided_by == owner


@pytest.mark.django_db
def test_a_decided_request_cannot_be_decided_again_in_the_admin(client, owner, operator, operator2):
    approval = request_approval(action="test.thing", requested_by=operator2, reason="why")
    decide_approval(approval, user=operator, approve=False)
    client.force_login(owner)
    response = client.post("/admin/controlplane/approval/", _action("approve", approval))
    assert any("already rejected" in m for m in _messages(response))
    approval.refresh_from_db()
    assert approval.status == Approval.Status.REJECTED
    assert approval.decided_by == operator


@pytest.mark.django_db
def test_approvals_cannot_be_edited_in_the_admin_even_by_an_owner(client, owner, operator):
    approval = request_approval(action="test.thing", requested_by=operator, reason="why")
    client.force_login(owner)
    url = f"/admin/controlplane/approval/{approval.pk}/"
    changed = client.post(f"{url}change/", {"status": "approved", "reason": "edited"})
    deleted = client.post(f"{url}delete/", {"post": "yes"})
    assert changed.status_code == 403
    assert deleted.status_code == 403
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING
    assert approval.reason == "why"


# The audit trail is read-only


@pytest.mark.django_db
@pytest.mark.parametrize("persona", ["owner", "superuser"])
def test_the_audit_trail_is_read_only_in_the_admin(client, request, persona):
    user = request.getfixturevalue(persona)
    toggle = FeatureToggle.objects.create(key="chat.streaming")
    event = AuditEvent.objects.get(action="featuretoggle.created", object_id=str(toggle.pk))
    client.force_login(user)
    url = f"/admin/controlplane/auditevent/{event.pk}/"

    listing = client.get("/admin/controlplane/auditevent/")
    assert listing.status_code == 200
    assert listing.context["has_add_permission"] is False
    assert listing.context["action_form"] is None  # not even "delete selected"

    detail = client.get(f"{url}change/")
    assert detail.status_code == 200
    assert detail.context["has_change_permission"] is False
    assert detail.context["has_delete_permission"] is False
    assert b'name="_save"' not in detail.content

    assert client.get("/admin/controlplane/auditevent/add/").status_code == 403
    assert client.post("/admin/controlplane/auditevent/add/", {"action": "x"}).status_code == 403
    assert client.post(f"{url}change/", {"action": "rewritten"}).status_code == 403
    assert client.get(f"{url}delete/").status_code == 403
    assert client.post(f"{url}delete/", {"post": "yes"}).status_code == 403
    bulk = client.post("/admin/controlplane/auditevent/", _action("delete_selected", event))
    assert bulk.status_code in (200, 302)

    event.refresh_from_db()
    assert event.action == "featuretoggle.created"
    assert AuditEvent.objects.filter(pk=event.pk).exists()


# Notification channels keep their target secret


def _raw_target(channel: NotificationChannel) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT target FROM controlplane_notificationchannel WHERE id = %s", [channel.pk]
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_a_channel_added_in_the_admin_stores_its_target_encrypted(client, owner):
    client.force_login(owner)
    response = client.post(
        "/admin/controlplane/notificationchannel/add/",
        {"name": "ops", "kind": "discord", "target": WEBHOOK, "enabled": "on", "_save": "Save"},
    )
    assert response.status_code == 302
    channel = NotificationChannel.objects.get(name="ops")
    assert channel.target == WEBHOOK
    raw = _raw_target(channel)
    assert raw != WEBHOOK
    assert SECRET_PART not in raw
    assert "discord.com" not in raw
    created = AuditEvent.objects.get(action="notificationchannel.created")
    assert created.after["target"] == "[redacted]"
    assert SECRET_PART not in str(created.after)


@pytest.mark.django_db
def test_a_new_channel_needs_a_target(client, owner):
    client.force_login(owner)
    response = client.post(
        "/admin/controlplane/notificationchannel/add/",
        {"name": "ops", "kind": "discord", "target": "", "enabled": "on", "_save": "Save"},
    )
    assert response.status_code == 200
    assert "target" in response.context["adminform"].form.errors
    assert not NotificationChannel.objects.exists()


@pytest.mark.django_db
def test_the_change_form_never_shows_a_channels_target(client, owner, channel):
    client.force_login(owner)
    response = client.get(f"/admin/controlplane/notificationchannel/{channel.pk}/change/")
    assert response.status_code == 200
    assert WEBHOOK.encode() not in response.content
    assert SECRET_PART.encode() not in response.content


@pytest.mark.django_db
def test_the_read_only_change_form_never_shows_a_channels_target(client, observer, channel):
    client.force_login(observer)
    response = client.get(f"/admin/controlplane/notificationchannel/{channel.pk}/change/")
    assert response.status_code == 200
    assert WEBHOOK.encode() not in response.content
    assert SECRET_PART.encode() not in response.content


@pytest.mark.django_db
def test_saving_a_channel_with_a_blank_target_keeps_the_current_one(client, owner, channel):
    client.force_login(owner)
    response = client.post(
        f"/admin/controlplane/notificationchannel/{channel.pk}/change/",
        {"name": "ops", "kind": "discord", "target": "", "_save": "Save"},
    )
    assert response.status_code == 302
    channel.refresh_from_db()
    assert channel.target == WEBHOOK
    assert channel.enabled is False
    event = AuditEvent.objects.get(action="notificationchannel.changed")
    assert event.after == {"enabled": False}


@pytest.mark.django_db
def test_the_channel_list_shows_the_target_masked(client, observer, channel):
    client.force_login(observer)
    response = client.get("/admin/controlplane/notificationchannel/")
    assert response.status_code == 200
    content = response.content.decode()
    assert "••••••••alue" in content  # the last four characters only
    assert WEBHOOK not in content
    assert SECRET_PART not in content


# Query counts stay flat as the lists grow


def _count_queries(client: Any, path: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(path)
    assert response.status_code == 200
    return len(queries)


def _more_approvals(requester: Any, decider: Any, count: int) -> None:
    for n in range(count):
        pending = request_approval(action="test.thing", requested_by=requester, reason=f"r{n}")
        decided = request_approval(action="test.thing", requested_by=requester, reason=f"d{n}")
        decide_approval(decided, user=decider, approve=n % 2 == 0, note="ok")
        assert pending.is_pending
    request_approval(
        action="model.call", requested_by=requester, reason="money", amount=Decimal("1.5")
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/approvals/",
        "/admin/controlplane/approval/",
        "/admin/controlplane/auditevent/",
    ],
)
def test_list_pages_run_the_same_number_of_queries_for_1_or_10_approvals(
    client, operator, operator2, owner, path
):
    client.force_login(owner)
    _more_approvals(operator, operator2, 1)
    client.get(path)  # warm the per-process caches (content types, sessions)
    few = _count_queries(client, path)
    _more_approvals(operator2, operator, 9)
    assert _count_queries(client, path) == few


@pytest.mark.django_db
def test_home_stays_within_a_fixed_query_budget(
    client, operator, operator2, owner, django_assert_max_num_queries
):
    client.force_login(owner)
    _more_approvals(operator, operator2, 10)
    client.get("/")
    # Home is the cockpit: a few queries per card, however many rows
    # (tests/controlplane/test_home.py asserts the count does not grow with them).
    with django_assert_max_num_queries(35):
        assert client.get("/").status_code == 200
