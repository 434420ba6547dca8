"""The permission matrix: who may see and who may change what, tier by tier.

Observers see every page and change nothing; Operators decide approvals that are
not about money but cannot edit configuration; Owners edit configuration; outsiders
(active accounts in no tier) get 403 everywhere; anonymous visitors go to the login
page. Toggles and notification channels stand for every configuration model.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from django.contrib.messages import get_messages

from controlplane.approvals import request_approval
from controlplane.models import Approval, AuditEvent, FeatureToggle, NotificationChannel
from tests.personas import PASSWORD

PAGES = ["/", "/approvals/", "/toggles/", "/chat/", "/routing/", "/selfheal/", "/health/"]
ADMIN_PAGES = [
    "/admin/",
    "/admin/controlplane/auditevent/",
    "/admin/controlplane/featuretoggle/",
    "/admin/controlplane/approval/",
    "/admin/controlplane/notificationchannel/",
    "/admin/controlplane/notificationdelivery/",
    "/admin/auth/user/",
    "/admin/auth/group/",
]
WEBHOOK = "https://discord.com/api/webhooks/1234/s3cret-token-value"


@pytest.fixture
def toggle(db: Any) -> FeatureToggle:
    return FeatureToggle.objects.create(key="chat.streaming", description="Stream replies")


@pytest.fixture
def channel(db: Any) -> NotificationChannel:
    return NotificationChannel.objects.create(name="ops", kind="discord", target=WEBHOOK)


def _toggle_url(toggle: FeatureToggle, view: str = "change") -> str:
    return f"/admin/controlplane/featuretoggle/{toggle.pk}/{view}/"


def _channel_url(channel: NotificationChannel, view: str = "change") -> str:
    return f"/admin/controlplane/notificationchannel/{channel.pk}/{view}/"


def _toggle_form(toggle: FeatureToggle, **overrides: Any) -> dict[str, str]:
    values = {
        "key": toggle.key,
        "enabled": toggle.enabled,
        "locked": toggle.locked,
        "critical": toggle.critical,
        "description": toggle.description,
        **overrides,
    }
    form = {"_save": "Save"}
    for name, value in values.items():
        # A browser sends a ticked checkbox as "on" and leaves an unticked one out.
        if value is True:
            form[name] = "on"
        elif value is not False:
            form[name] = value
    return form


def _channel_form(channel: NotificationChannel, **overrides: Any) -> dict[str, str]:
    return {
        "name": channel.name,
        "kind": channel.kind,
        "target": "",
        "enabled": "on",
        "_save": "Save",
        **overrides,
    }


def _action(action: str, *objects: Any) -> dict[str, Any]:
    return {"action": action, "_selected_action": [obj.pk for obj in objects], "index": "0"}


def _action_names(response: Any) -> set[str]:
    action_form = response.context["action_form"]
    if action_form is None:
        return set()
    return {name for name, _label in action_form.fields["action"].choices if name}


def _messages(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


# Anonymous visitors


@pytest.mark.django_db
@pytest.mark.parametrize("path", PAGES)
def test_an_anonymous_visitor_is_sent_to_the_login_page(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={quote(path)}"


@pytest.mark.django_db
@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_an_anonymous_visitor_to_the_admin_ends_on_the_product_login_page(client, path):
    response = client.get(path, follow=True)
    final_url, _status = response.redirect_chain[-1]
    assert final_url == f"/accounts/login/?next={quote(path)}"
    assert response.status_code == 200
    assert "app_list" not in response.context


@pytest.mark.django_db
def test_the_admin_login_page_sends_visitors_to_the_product_login_page(client):
    response = client.get("/admin/login/?next=/admin/controlplane/approval/")
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={quote('/admin/controlplane/approval/')}"


@pytest.mark.django_db
def test_the_admin_login_page_sends_a_logged_in_observer_on(client, observer):
    client.force_login(observer)
    response = client.get("/admin/login/?next=/admin/controlplane/approval/")
    assert response.status_code == 302
    assert response["Location"] == "/admin/controlplane/approval/"


@pytest.mark.django_db
def test_an_observer_logs_in_and_reaches_the_admin(client, observer):
    response = client.post(
        "/accounts/login/",
        {"username": observer.username, "password": PASSWORD, "next": "/admin/"},
    )
    assert response.status_code == 302
    assert response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


# Outsiders: an active account in no tier


@pytest.mark.django_db
@pytest.mark.parametrize("path", PAGES)
def test_an_outsider_gets_403_on_every_page(client, outsider, path):
    client.force_login(outsider)
    assert client.get(path).status_code == 403


@pytest.mark.django_db
@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_an_outsider_cannot_see_the_admin(client, outsider, path):
    client.force_login(outsider)
    response = client.get(path, follow=True)
    assert response.status_code == 403
    assert b"Operator panel" not in response.content
    assert b"Feature toggles" not in response.content


@pytest.mark.django_db
def test_an_outsider_cannot_change_a_toggle_through_the_admin(client, outsider, toggle):
    client.force_login(outsider)
    response = client.post(_toggle_url(toggle), _toggle_form(toggle, enabled=True), follow=True)
    assert response.status_code == 403
    toggle.refresh_from_db()
    assert toggle.enabled is False


@pytest.mark.django_db
def test_an_outsider_cannot_decide_an_approval(client, outsider, operator):
    approval = request_approval(action="test.thing", requested_by=operator, reason="why")
    client.force_login(outsider)
    response = client.post(f"/approvals/{approval.pk}/decide/", {"decision": "approve"})
    assert response.status_code == 403
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING


# Observers: see everything, change nothing


@pytest.mark.django_db
@pytest.mark.parametrize("path", PAGES + ADMIN_PAGES)
def test_an_observer_can_see_every_page(client, observer, path):
    client.force_login(observer)
    assert client.get(path).status_code == 200


@pytest.mark.django_db
def test_an_observer_sees_a_toggle_read_only_in_the_admin(client, observer, toggle):
    client.force_login(observer)
    response = client.get(_toggle_url(toggle))
    assert response.status_code == 200
    assert response.context["has_change_permission"] is False
    assert b'name="_save"' not in response.content


@pytest.mark.django_db
def test_an_observer_cannot_change_a_toggle(client, observer, toggle):
    client.force_login(observer)
    response = client.post(_toggle_url(toggle), _toggle_form(toggle, enabled=True))
    assert response.status_code == 403
    toggle.refresh_from_db()
    assert toggle.enabled is False
    assert not AuditEvent.objects.filter(action="featuretoggle.changed").exists()


@pytest.mark.django_db
def test_an_observer_cannot_add_a_toggle(client, observer):
    client.force_login(observer)
    assert client.get("/admin/controlplane/featuretoggle/add/").status_code == 403
    response = client.post(
        "/admin/controlplane/featuretoggle/add/", {"key": "new.flag", "_save": "Save"}
    )
    assert response.status_code == 403
    assert not FeatureToggle.objects.filter(key="new.flag").exists()


@pytest.mark.django_db
def test_an_observer_cannot_delete_a_toggle(client, observer, toggle):
    client.force_login(observer)
    response = client.post(_toggle_url(toggle, "delete"), {"post": "yes"})
    assert response.status_code == 403
    assert FeatureToggle.objects.filter(pk=toggle.pk).exists()


@pytest.mark.django_db
def test_an_observer_has_no_admin_actions(client, observer, toggle, operator2):
    request_approval(action="test.thing", requested_by=operator2, reason="why")
    client.force_login(observer)
    toggles = client.get("/admin/controlplane/featuretoggle/")
    approvals = client.get("/admin/controlplane/approval/")
    assert _action_names(toggles) == set()
    assert _action_names(approvals) == set()


@pytest.mark.django_db
def test_an_observer_cannot_turn_a_toggle_on_with_an_admin_action(client, observer, toggle):
    client.force_login(observer)
    client.post("/admin/controlplane/featuretoggle/", _action("turn_on", toggle))
    toggle.refresh_from_db()
    assert toggle.enabled is False


@pytest.mark.django_db
def test_an_observer_cannot_change_a_notification_channel(client, observer, channel):
    client.force_login(observer)
    response = client.post(_channel_url(channel), _channel_form(channel, name="renamed"))
    assert response.status_code == 403
    channel.refresh_from_db()
    assert channel.name == "ops"


@pytest.mark.django_db
def test_an_observer_cannot_add_a_notification_channel(client, observer):
    client.force_login(observer)
    response = client.post(
        "/admin/controlplane/notificationchannel/add/",
        {"name": "new", "kind": "discord", "target": WEBHOOK, "enabled": "on", "_save": "Save"},
    )
    assert response.status_code == 403
    assert not NotificationChannel.objects.exists()


@pytest.mark.django_db
def test_an_observer_cannot_request_a_toggle_change(client, observer, toggle):
    client.force_login(observer)
    response = client.post("/toggles/", {"key": toggle.key, "enabled": "true", "reason": "try it"})
    assert response.status_code == 403
    assert not Approval.objects.exists()


@pytest.mark.django_db
def test_an_observer_cannot_decide_an_approval(client, observer, operator):
    approval = request_approval(action="test.thing", requested_by=operator, reason="why")
    client.force_login(observer)
    response = client.post(f"/approvals/{approval.pk}/decide/", {"decision": "approve"})
    assert response.status_code == 403
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING
    assert approval.decided_by is None


@pytest.mark.django_db
def test_an_observer_cannot_approve_through_the_admin(client, observer, operator):
    approval = request_approval(action="test.thing", requested_by=operator, reason="why")
    client.force_login(observer)
    client.post("/admin/controlplane/approval/", _action("approve", approval))
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING


# Operators: decide approvals, request changes, but do not edit configuration


@pytest.mark.django_db
def test_an_operator_cannot_change_a_toggle(client, operator, toggle):
    client.force_login(operator)
    response = client.post(_toggle_url(toggle), _toggle_form(toggle, enabled=True))
    assert response.status_code == 403
    toggle.refresh_from_db()
    assert toggle.enabled is False


@pytest.mark.django_db
def test_an_operator_cannot_add_or_delete_a_toggle(client, operator, toggle):
    client.force_login(operator)
    added = client.post(
        "/admin/controlplane/featuretoggle/add/", {"key": "new.flag", "_save": "Save"}
    )
    deleted = client.post(_toggle_url(toggle, "delete"), {"post": "yes"})
    assert added.status_code == 403
    assert deleted.status_code == 403
    assert not FeatureToggle.objects.filter(key="new.flag").exists()
    assert FeatureToggle.objects.filter(pk=toggle.pk).exists()


@pytest.mark.django_db
def test_an_operator_is_not_offered_the_toggle_actions(client, operator, toggle):
    client.force_login(operator)
    response = client.get("/admin/controlplane/featuretoggle/")
    assert response.status_code == 200
    assert not {"turn_on", "turn_off"} & _action_names(response)


@pytest.mark.django_db
def test_an_operator_cannot_turn_a_toggle_on_with_an_admin_action(client, operator, toggle):
    client.force_login(operator)
    client.post("/admin/controlplane/featuretoggle/", _action("turn_on", toggle))
    toggle.refresh_from_db()
    assert toggle.enabled is False
    assert not AuditEvent.objects.filter(action="featuretoggle.changed").exists()


@pytest.mark.django_db
def test_an_operator_cannot_change_a_notification_channel(client, operator, channel):
    client.force_login(operator)
    response = client.post(
        _channel_url(channel), _channel_form(channel, target="https://evil.example/hook")
    )
    assert response.status_code == 403
    channel.refresh_from_db()
    assert channel.target == WEBHOOK


@pytest.mark.django_db
def test_an_operator_cannot_add_or_delete_a_notification_channel(client, operator, channel):
    client.force_login(operator)
    added = client.post(
        "/admin/controlplane/notificationchannel/add/",
        {"name": "new", "kind": "discord", "target": WEBHOOK, "enabled": "on", "_save": "Save"},
    )
    deleted = client.post(_channel_url(channel, "delete"), {"post": "yes"})
    assert added.status_code == 403
    assert deleted.status_code == 403
    assert list(NotificationChannel.objects.values_list("name", flat=True)) == ["ops"]


@pytest.mark.django_db
def test_an_operator_can_request_a_toggle_change_for_an_owner_to_approve(client, operator, toggle):
    client.force_login(operator)
    response = client.post(
        "/toggles/", {"key": toggle.key, "enabled": "true", "reason": "launch day"}
    )
    assert response.status_code == 302
    approval = Approval.objects.get()
    assert approval.requested_by == operator
    assert approval.required_tier == Approval.RequiredTier.OWNER
    toggle.refresh_from_db()
    assert toggle.enabled is False


@pytest.mark.django_db
def test_an_operator_can_decide_another_persons_request(client, operator, operator2):
    approval = request_approval(action="test.thing", requested_by=operator2, reason="why")
    client.force_login(operator)
    response = client.post(f"/approvals/{approval.pk}/decide/", {"decision": "approve"})
    assert response.status_code == 302
    approval.refresh_from_db()
    assert approval.status == Approval.Status.APPROVED
    assert approval.decided_by == operator


# Owners: change configuration, and every change is audited


@pytest.mark.django_db
def test_an_owner_can_change_a_toggle_and_it_is_audited(client, owner, toggle):
    client.force_login(owner)
    response = client.post(
        _toggle_url(toggle), _toggle_form(toggle, enabled=True, description="Stream tokens")
    )
    assert response.status_code == 302
    toggle.refresh_from_db()
    assert toggle.enabled is True
    assert toggle.description == "Stream tokens"
    event = AuditEvent.objects.get(action="featuretoggle.changed")
    assert event.actor == owner
    assert event.object_id == str(toggle.pk)
    assert event.before["enabled"] is False
    assert event.after["enabled"] is True
    assert event.before["description"] == "Stream replies"
    assert event.after["description"] == "Stream tokens"
    assert "key" not in event.after  # only what changed


@pytest.mark.django_db
def test_an_owner_can_turn_toggles_on_with_the_admin_action(client, owner, toggle):
    client.force_login(owner)
    listing = client.get("/admin/controlplane/featuretoggle/")
    assert {"turn_on", "turn_off"} <= _action_names(listing)
    response = client.post("/admin/controlplane/featuretoggle/", _action("turn_on", toggle))
    assert response.status_code == 302
    toggle.refresh_from_db()
    assert toggle.enabled is True
    event = AuditEvent.objects.get(action="featuretoggle.changed")
    assert event.actor == owner
    assert (event.before["enabled"], event.after["enabled"]) == (False, True)


@pytest.mark.django_db
def test_an_owner_can_change_a_notification_channel(client, owner, channel):
    client.force_login(owner)
    new_target = "https://discord.com/api/webhooks/5678/another-token"
    response = client.post(_channel_url(channel), _channel_form(channel, target=new_target))
    assert response.status_code == 302
    channel.refresh_from_db()
    assert channel.target == new_target
    event = AuditEvent.objects.get(action="notificationchannel.changed")
    assert event.actor == owner
    assert event.after == {"target": "[redacted]"}


# What each page offers: the templates ask `perms`, the same permissions the views check.


@pytest.mark.django_db
@pytest.mark.parametrize(("persona", "offered"), [("observer", False), ("operator", True)])
def test_home_offers_the_decision_buttons_only_to_who_may_decide(
    client, request, operator2, persona, offered
):
    request_approval(action="test.thing", requested_by=operator2, reason="why")
    client.force_login(request.getfixturevalue(persona))
    html = client.get("/").content.decode()
    assert ('value="approve"' in html) is offered


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("persona", "may_request", "may_change"),
    [("observer", False, False), ("operator", True, False), ("owner", True, True)],
)
def test_the_toggles_page_offers_what_each_tier_may_do(
    client, request, toggle, persona, may_request, may_change
):
    client.force_login(request.getfixturevalue(persona))
    html = client.get("/toggles/").content.decode()
    assert ("Request a change" in html) is may_request
    assert ("As an Owner you switch a toggle from its row" in html) is may_change
    assert ('action="/toggles/switch/"' in html) is may_change
