"""The Toggles page's switches: an Owner switches a toggle from its row with a reason,
audited as the admin's change is and seen by every reader at once; nobody else can;
a next action that says "Switch X on" opens that switch."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from chat.rendering import render_event, viewer_permissions
from chat.stop_reasons import explain
from controlplane.audit import wait_for_refusal_events
from controlplane.models import AuditEvent, FeatureToggle, toggle_enabled
from controlplane.toggle_changes import toggle_page_url

pytestmark = pytest.mark.django_db

SWITCH = "/toggles/switch/"
KEY = "chat.runs.enabled"


@pytest.fixture
def runs_off(db: Any) -> FeatureToggle:
    toggle, _ = FeatureToggle.objects.update_or_create(key=KEY, defaults={"enabled": False})
    return toggle


def switches_audited() -> list[AuditEvent]:
    """The audited changes that carry a reason: the switches (a fixture's set-up is not one)."""
    changes = AuditEvent.objects.filter(action="featuretoggle.changed")
    return [event for event in changes if "reason" in (event.after or {})]


def logged_in(client: Client, user: Any) -> Client:
    client.force_login(user)
    return client


def switch_on(client: Client, key: str = KEY, reason: str = "Incident over.") -> Any:
    return client.post(SWITCH, {"key": key, "enabled": "true", "reason": reason})


def test_an_owner_switches_a_toggle_on_with_a_reason_and_it_is_audited(
    client: Client, owner: Any, runs_off: FeatureToggle, django_capture_on_commit_callbacks: Any
) -> None:
    assert toggle_enabled(KEY) is False  # cached as off
    with django_capture_on_commit_callbacks(execute=True):
        response = switch_on(logged_in(client, owner), reason="The incident is over.")

    assert response.status_code == 302
    assert response.url == f"/toggles/#toggle-{KEY}"
    runs_off.refresh_from_db()
    assert runs_off.enabled is True
    [event] = switches_audited()
    assert (event.actor, event.object_repr) == (owner, KEY)
    assert event.before["enabled"] is False
    assert event.after["enabled"] is True
    assert event.after["reason"] == "The incident is over."
    assert event.client_address == "127.0.0.1"
    assert toggle_enabled(KEY) is True  # the cache was updated, as the admin's save does
    page = client.get(response.url).content.decode()
    assert f"&#x27;{KEY}&#x27; switched on." in page


def test_an_owner_switches_a_toggle_off_the_same_way(
    client: Client, owner: Any, django_capture_on_commit_callbacks: Any
) -> None:
    toggle, _ = FeatureToggle.objects.update_or_create(
        key="autoheal.enabled", defaults={"enabled": True}
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = logged_in(client, owner).post(
            SWITCH, {"key": toggle.key, "enabled": "false", "reason": "Repairs loop."}
        )

    assert response.status_code == 302
    assert toggle_enabled("autoheal.enabled", default=True) is False


def test_an_owner_sees_a_switch_on_each_row_that_is_not_locked(
    client: Client, owner: Any, runs_off: FeatureToggle
) -> None:
    FeatureToggle.objects.create(key="frozen.flag", enabled=True, locked=True)

    page = logged_in(client, owner).get("/toggles/").content.decode()

    assert f'action="{SWITCH}"' in page
    assert f'<input type="hidden" name="key" value="{KEY}">' in page
    assert f"Switch {KEY} on" in page
    assert 'value="frozen.flag"' not in page.split("Request a change")[0]


def test_an_operator_sees_the_state_but_no_switch(
    client: Client, operator: Any, runs_off: FeatureToggle
) -> None:
    page = logged_in(client, operator).get("/toggles/").content.decode()

    assert f'id="toggle-{KEY}"' in page
    assert f'action="{SWITCH}"' not in page
    assert f"Switch {KEY} on" not in page


@pytest.mark.parametrize("persona", ["observer", "operator"])
def test_nobody_but_an_owner_can_post_a_switch(
    client: Client, persona: str, request: pytest.FixtureRequest, runs_off: FeatureToggle
) -> None:
    response = switch_on(logged_in(client, request.getfixturevalue(persona)))

    assert response.status_code == 403
    runs_off.refresh_from_db()
    assert runs_off.enabled is False
    assert switches_audited() == []


def test_an_outsider_cannot_post_a_switch(
    client: Client, outsider: Any, runs_off: FeatureToggle
) -> None:
    assert switch_on(logged_in(client, outsider)).status_code == 403
    runs_off.refresh_from_db()
    assert runs_off.enabled is False


def test_a_switch_without_a_reason_is_refused_saying_why(
    client: Client, owner: Any, runs_off: FeatureToggle
) -> None:
    response = switch_on(logged_in(client, owner), reason="   ")

    assert response.status_code == 400
    page = response.content.decode()
    assert 'id="switch-errors"' in page
    assert "Say why." in page
    assert f'<tr id="toggle-{KEY}" class="focused">' in page  # its switch stays open
    runs_off.refresh_from_db()
    assert runs_off.enabled is False
    assert switches_audited() == []


def test_switching_an_unknown_toggle_is_a_form_error(client: Client, owner: Any) -> None:
    response = switch_on(logged_in(client, owner), key="no.such.flag")

    assert response.status_code == 400
    assert "There is no toggle &#x27;no.such.flag&#x27;." in response.content.decode()
    assert not FeatureToggle.objects.filter(key="no.such.flag").exists()


def test_a_switch_missing_its_fields_names_them(client: Client, owner: Any) -> None:
    response = logged_in(client, owner).post(SWITCH, {"enabled": "maybe"})

    assert response.status_code == 400
    page = response.content.decode()
    assert "Name the toggle." in page
    assert "Say why." in page
    assert "Select a valid choice" in page


def test_switching_a_toggle_to_the_state_it_has_is_refused(
    client: Client, owner: Any, runs_off: FeatureToggle
) -> None:
    response = logged_in(client, owner).post(
        SWITCH, {"key": KEY, "enabled": "false", "reason": "Make sure."}
    )

    assert response.status_code == 400
    assert f"&#x27;{KEY}&#x27; is already off." in response.content.decode()
    assert switches_audited() == []


def test_a_locked_toggle_is_not_switched_and_the_attempt_is_audited(
    client: Client, owner: Any
) -> None:
    toggle = FeatureToggle.objects.create(key="frozen.flag", enabled=False, locked=True)

    response = switch_on(logged_in(client, owner), key=toggle.key, reason="Try it.")
    wait_for_refusal_events()

    assert response.status_code == 400
    assert "is locked and cannot be changed by anyone" in response.content.decode()
    toggle.refresh_from_db()
    assert toggle.enabled is False
    refusal = AuditEvent.objects.get(action="featuretoggle.change_refused")
    assert refusal.actor == owner
    assert refusal.after["reason"] == "Try it."


def test_the_next_action_to_switch_a_toggle_on_opens_its_switch(
    client: Client, owner: Any, runs_off: FeatureToggle
) -> None:
    stop = explain("toggle_off", run=None, toggle=KEY)  # type: ignore[arg-type]
    html = render_event(1, "stop_reason", stop, perms=viewer_permissions(owner), oob=False)
    href = toggle_page_url(KEY)
    assert href == f"/toggles/?toggle={KEY}#toggle-{KEY}"
    assert f'href="{href}"' in html

    page = logged_in(client, owner).get(href).content.decode()

    row = page[page.index(f'<tr id="toggle-{KEY}"') :]
    row = row[: row.index("</tr>")]
    assert 'class="focused"' in row
    assert '<details class="toggle-switch" open>' in row
    assert f"Switch {KEY} on" in row
