"""Integrations in the operator panel: the kind's fields, secrets written but never
read back, the connection test, the audit trail, and who may do what."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.views.debug import SafeExceptionReporterFilter

from controlplane import integrations
from controlplane.integrations import (
    RAILWAY_API_URL,
    ConnectionResult,
    IntegrationKind,
    SecretField,
    SettingField,
    auth_headers,
)
from controlplane.models import AuditEvent, Integration

TOKEN = "rw-7f3c2a9e-token-d41d8cd98f00b204e980"
SECRET_PART = "7f3c2a9e-token-d41d8"
NEW_TOKEN = "rw-0a1b2c3d-fresh-token-99887766"
LIST = "/admin/controlplane/integration/"
ADD_PAGE = f"{LIST}add/"
# Several kinds are declared (Railway, GitHub): the add page asks which, by ?kind=.
ADD = f"{ADD_PAGE}?kind=railway"


@pytest.fixture
def railway(db: Any) -> Integration:
    integration = Integration(kind=Integration.Kind.RAILWAY, name="railway-prod")
    integration.set_secrets({"token": TOKEN})
    integration.settings = {"token_type": "account", "api_url": RAILWAY_API_URL}
    integration.save()
    return integration


@pytest.fixture
def connection_tests(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str]]:
    """Railway's test replaced by one that records what it was given (the real one
    is healthmon's, tested there): it fails for any token but TOKEN."""
    seen: list[dict[str, str]] = []

    def fake_test(integration: Integration) -> ConnectionResult:
        seen.append(auth_headers(integration))
        if integration.secrets.get("token") == TOKEN:
            return ConnectionResult(True, "Connected as ops@example.com.")
        return ConnectionResult(False, f"Not authorized (token {integration.secrets['token']}).")

    monkeypatch.setitem(integrations._tests, Integration.Kind.RAILWAY, fake_test)
    return seen


def _change(integration: Integration) -> str:
    return f"{LIST}{integration.pk}/change/"


def _test_url(integration: Integration) -> str:
    return f"{LIST}{integration.pk}/test-connection/"


def _form(**values: Any) -> dict[str, Any]:
    form = {
        "name": "railway-prod",
        "enabled": "on",
        "secret_token": TOKEN,
        "setting_token_type": "account",
        "setting_api_url": RAILWAY_API_URL,
        "_save": "Save",
    }
    form.update(values)
    return {k: v for k, v in form.items() if v is not None}


def _messages(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def _raw_credentials(integration: Integration) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT credentials FROM controlplane_integration WHERE id = %s", [integration.pk]
        )
        return str(cursor.fetchone()[0])


def _audit_text() -> str:
    return json.dumps(
        list(AuditEvent.objects.values("action", "object_repr", "before", "after")), default=str
    )


# Adding


@pytest.mark.django_db
def test_the_add_form_shows_the_kinds_fields_with_the_token_as_a_password_input(client, owner):
    client.force_login(owner)
    response = client.get(ADD)
    assert response.status_code == 200
    content = response.content.decode()
    assert 'type="password" name="secret_token"' in content
    assert f'value="{RAILWAY_API_URL}"' in content
    assert 'name="setting_token_type"' in content
    assert "Project token" in content


@pytest.mark.django_db
def test_an_owner_adds_a_railway_integration_with_its_token_stored_encrypted(client, owner):
    client.force_login(owner)
    response = client.post(ADD, _form(setting_token_type="project"))
    assert response.status_code == 302
    integration = Integration.objects.get(name="railway-prod")
    assert integration.kind == Integration.Kind.RAILWAY
    assert integration.secrets == {"token": TOKEN}
    assert integration.settings == {"token_type": "project", "api_url": RAILWAY_API_URL}
    assert auth_headers(integration) == {"Project-Access-Token": TOKEN}
    raw = _raw_credentials(integration)
    assert SECRET_PART not in raw
    assert "token" not in raw
    created = AuditEvent.objects.get(action="integration.created")
    assert created.actor == owner
    assert created.after["credentials"] == "[redacted]"
    assert created.after["settings"]["api_url"] == RAILWAY_API_URL
    assert SECRET_PART not in _audit_text()


@pytest.mark.django_db
def test_a_new_integration_needs_a_token(client, owner):
    client.force_login(owner)
    response = client.post(ADD, _form(secret_token=""))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors["secret_token"] == ["A Railway integration needs a token."]
    assert not Integration.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"secret_token": "abc\r\nX-Injected: 1"}, "secret_token"),
        ({"secret_token": "x" * 5000}, "secret_token"),
        ({"setting_api_url": "not a url at all"}, "setting_api_url"),
        ({"setting_api_url": "https://example.com/\x00"}, "setting_api_url"),
        ({"setting_token_type": "root"}, "setting_token_type"),
        ({"name": "has spaces"}, "name"),
    ],
)
def test_bad_input_is_refused_with_the_forms_error(client, owner, values, field):
    client.force_login(owner)
    response = client.post(ADD, _form(**values))
    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    assert not Integration.objects.exists()


@pytest.mark.django_db
def test_an_unknown_kind_on_the_add_page_says_so_instead_of_failing(client, owner):
    client.force_login(owner)
    response = client.get(f"{ADD_PAGE}?kind=gopher", follow=True)
    assert response.status_code == 200
    assert "There is no integration kind 'gopher'." in _messages(response)


@pytest.mark.django_db
def test_the_kind_cannot_be_changed_by_posting_another(client, owner):
    client.force_login(owner)
    assert client.post(ADD, _form(kind="github")).status_code == 302
    assert Integration.objects.get().kind == Integration.Kind.RAILWAY


# Editing: secrets are written, never read back


@pytest.mark.django_db
@pytest.mark.parametrize("persona", ["owner", "operator", "observer"])
def test_the_change_page_never_shows_the_token(client, request, railway, persona):
    client.force_login(request.getfixturevalue(persona))
    response = client.get(_change(railway))
    assert response.status_code == 200
    content = response.content.decode()
    assert SECRET_PART not in content
    assert "••••••••" in content  # shown masked
    assert RAILWAY_API_URL in content


@pytest.mark.django_db
def test_saving_with_a_blank_token_keeps_the_stored_one(client, owner, railway):
    client.force_login(owner)
    url = "http://127.0.0.1:9/graphql/v2"
    response = client.post(_change(railway), _form(secret_token="", setting_api_url=url))
    assert response.status_code == 302
    railway.refresh_from_db()
    assert railway.secrets == {"token": TOKEN}
    assert railway.settings["api_url"] == url
    event = AuditEvent.objects.get(action="integration.changed")
    assert list(event.after) == ["settings"]


@pytest.mark.django_db
def test_a_new_token_replaces_the_old_one_and_is_audited_redacted(client, owner, railway):
    client.force_login(owner)
    response = client.post(_change(railway), _form(secret_token=NEW_TOKEN))
    assert response.status_code == 302
    railway.refresh_from_db()
    assert railway.secrets == {"token": NEW_TOKEN}
    event = AuditEvent.objects.get(action="integration.changed")
    assert event.before == {"credentials": "[redacted]"}
    assert event.after == {"credentials": "[redacted]"}
    assert SECRET_PART not in _audit_text()
    assert "fresh-token" not in _audit_text()


@pytest.mark.django_db
def test_error_reports_of_a_save_hide_every_posted_value(client, owner, railway):
    client.force_login(owner)
    response = client.post(_change(railway), _form(secret_token=NEW_TOKEN))
    posted = SafeExceptionReporterFilter().get_post_parameters(response.wsgi_request)
    assert NEW_TOKEN not in str(posted)
    assert posted["secret_token"] == SafeExceptionReporterFilter.cleansed_substitute


@pytest.mark.django_db
def test_the_token_appears_in_no_page_audit_event_log_entry_or_log_record(
    client, owner, connection_tests, caplog
):
    caplog.set_level(logging.DEBUG)
    client.force_login(owner)
    pages = [client.get(ADD), client.post(ADD, _form(), follow=True)]
    integration = Integration.objects.get()
    pages += [
        client.post(_change(integration), _form(secret_token=NEW_TOKEN), follow=True),
        client.post(_change(integration), _form(secret_token=TOKEN, enabled=None), follow=True),
        client.post(_test_url(integration), follow=True),
        client.get(LIST),
        client.get(_change(integration)),
        client.get(f"{LIST}{integration.pk}/history/"),
        client.get("/admin/controlplane/auditevent/"),
    ]
    for event in AuditEvent.objects.all():
        pages.append(client.get(f"/admin/controlplane/auditevent/{event.pk}/change/"))
    assert all(page.status_code == 200 for page in pages)
    assert AuditEvent.objects.filter(action="integration.changed").count() == 2
    for secret in (SECRET_PART, "fresh-token"):
        assert not [page for page in pages if secret in page.content.decode()]
        assert secret not in _audit_text()
        assert secret not in str(list(LogEntry.objects.values()))
        assert secret not in caplog.text
        assert secret not in repr(integration)


# The list


@pytest.mark.django_db
def test_the_list_shows_kind_enabled_masked_token_last_test_and_last_error(
    client, observer, railway, connection_tests
):
    integrations.check_connection(railway)
    railway.record_error("Railway answered 503 Service Unavailable.")
    client.force_login(observer)
    response = client.get(LIST)
    assert response.status_code == 200
    content = response.content.decode()
    assert "railway-prod" in content
    assert "Railway" in content
    assert f"Token: ••••••••{TOKEN[-4:]}" in content
    assert SECRET_PART not in content
    assert "ok at" in content
    assert "Connected as ops@example.com." in content
    assert "Railway answered 503 Service Unavailable." in content


@pytest.mark.django_db
def test_the_list_runs_the_same_number_of_queries_for_1_or_10_integrations(client, owner, railway):
    client.force_login(owner)
    client.get(LIST)

    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert client.get(LIST).status_code == 200
        return len(queries)

    few = count()
    for n in range(9):
        more = Integration(kind=Integration.Kind.RAILWAY, name=f"railway-{n}")
        more.set_secrets({"token": f"{TOKEN}-{n}"})
        more.save()
    assert count() == few


# Test connection


@pytest.mark.django_db
def test_test_connection_runs_the_kinds_test_and_shows_its_result(
    client, owner, railway, connection_tests
):
    client.force_login(owner)
    page = client.get(_change(railway))
    assert b"Test connection" in page.content
    response = client.post(_test_url(railway), follow=True)
    assert response.redirect_chain[-1][0] == _change(railway)
    assert "railway-prod: Connected as ops@example.com." in _messages(response)
    assert connection_tests == [{"Authorization": f"Bearer {TOKEN}"}]
    railway.refresh_from_db()
    assert railway.last_test_ok is True
    assert railway.last_tested_at is not None
    event = AuditEvent.objects.get(action="integration.tested")
    assert event.actor == owner
    assert event.object_id == str(railway.pk)
    assert event.after == {"ok": True, "message": "Connected as ops@example.com."}


@pytest.mark.django_db
def test_a_failed_test_shows_failed_and_never_echoes_the_token(
    client, owner, railway, connection_tests
):
    railway.set_secrets({"token": NEW_TOKEN})
    railway.save()
    client.force_login(owner)
    response = client.post(_test_url(railway), follow=True)
    (message,) = _messages(response)
    assert message.startswith("railway-prod: failed: Not authorized (token ••••••••")
    assert "fresh-token" not in response.content.decode()
    railway.refresh_from_db()
    assert railway.last_test_ok is False
    assert "fresh-token" not in railway.last_test_message
    assert "fresh-token" not in _audit_text()
    assert AuditEvent.objects.get(action="integration.tested").after["ok"] is False


@pytest.mark.django_db
def test_a_kind_without_a_registered_test_reports_that(client, owner, railway, monkeypatch):
    monkeypatch.delitem(integrations._tests, Integration.Kind.RAILWAY, raising=False)
    client.force_login(owner)
    response = client.post(_test_url(railway), follow=True)
    assert _messages(response) == ["railway-prod: failed: No connection test for railway."]


@pytest.mark.django_db
def test_the_list_action_tests_each_selected_integration(client, owner, railway, connection_tests):
    other = Integration(kind=Integration.Kind.RAILWAY, name="railway-staging")
    other.set_secrets({"token": NEW_TOKEN})
    other.save()
    client.force_login(owner)
    response = client.post(
        LIST,
        {"action": "test_connection", "_selected_action": [railway.pk, other.pk], "index": "0"},
        follow=True,
    )
    messages = _messages(response)
    assert "railway-prod: Connected as ops@example.com." in messages
    assert any(m.startswith("railway-staging: failed: Not authorized") for m in messages)
    assert AuditEvent.objects.filter(action="integration.tested").count() == 2


@pytest.mark.django_db
def test_the_test_connection_url_takes_only_a_post(client, owner, railway, connection_tests):
    client.force_login(owner)
    assert client.get(_test_url(railway)).status_code == 405
    assert connection_tests == []


@pytest.mark.django_db
def test_testing_an_integration_that_does_not_exist_says_so(client, owner, connection_tests):
    client.force_login(owner)
    response = client.post(f"{LIST}999999/test-connection/", follow=True)
    assert response.status_code == 200
    assert "That integration does not exist." in _messages(response)


@pytest.mark.django_db
def test_test_connection_needs_the_csrf_token(owner, railway, connection_tests):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    assert client.post(_test_url(railway)).status_code == 403
    assert connection_tests == []


# Who may do what


@pytest.mark.django_db
@pytest.mark.parametrize("persona", ["observer", "operator"])
def test_observers_and_operators_see_integrations_but_change_nothing(
    client, request, railway, connection_tests, persona
):
    client.force_login(request.getfixturevalue(persona))
    listing = client.get(LIST)
    assert listing.status_code == 200
    assert listing.context["has_add_permission"] is False
    assert listing.context["action_form"] is None

    page = client.get(_change(railway))
    assert page.status_code == 200
    assert page.context["has_change_permission"] is False
    assert b'name="_save"' not in page.content
    assert b"Test connection" not in page.content

    assert client.get(ADD).status_code == 403
    assert client.post(ADD, _form(name="mine")).status_code == 403
    assert client.post(_change(railway), _form(secret_token=NEW_TOKEN)).status_code == 403
    assert client.post(f"{LIST}{railway.pk}/delete/", {"post": "yes"}).status_code == 403
    refused = client.post(_test_url(railway), follow=True)
    assert "Your tier does not allow testing integrations." in _messages(refused)
    action = client.post(
        LIST, {"action": "test_connection", "_selected_action": [railway.pk], "index": "0"}
    )
    assert action.status_code in (200, 302)

    railway.refresh_from_db()
    assert railway.secrets == {"token": TOKEN}
    assert connection_tests == []
    assert railway.last_tested_at is None
    assert (
        not AuditEvent.objects.filter(action__startswith="integration.")
        .exclude(action="integration.created")
        .exists()
    )


@pytest.mark.django_db
def test_an_owner_deletes_an_integration_and_it_is_audited(client, owner, railway):
    client.force_login(owner)
    response = client.post(f"{LIST}{railway.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Integration.objects.exists()
    deleted = AuditEvent.objects.get(action="integration.deleted")
    assert deleted.before["credentials"] == "[redacted]"


@pytest.mark.django_db
def test_outsiders_get_403_and_anonymous_visitors_the_login_page(
    client, outsider, railway, connection_tests
):
    anonymous = client.get(LIST)
    assert anonymous.status_code == 302
    assert "/login/" in anonymous["Location"]
    assert client.post(_test_url(railway)).status_code == 302
    client.force_login(outsider)
    # The admin sends whoever is not staff to its login page, which refuses them.
    assert client.get(LIST, follow=True).status_code == 403
    assert client.get(_change(railway), follow=True).status_code == 403
    assert client.post(_test_url(railway), follow=True).status_code == 403
    assert connection_tests == []


@pytest.mark.django_db
def test_integrations_are_listed_under_control(client, observer):
    client.force_login(observer)
    sections = {
        app["name"]: [m["name"] for m in app["models"]]
        for app in client.get("/admin/").context["app_list"]
    }
    assert "Integrations" in sections["Control"]


@pytest.mark.django_db
def test_with_several_kinds_declared_the_add_page_asks_which_first(client, owner, monkeypatch):
    # A later kind is a declaration only: its form is built from its fields.
    github = IntegrationKind(
        kind="github",
        secrets=(SecretField("app_key", "App private key"),),
        settings=(SettingField("api_url", "API URL", default="https://api.github.com"),),
    )
    monkeypatch.setitem(integrations._kinds, "github", github)
    client.force_login(owner)
    chooser = client.get(ADD_PAGE)
    assert chooser.status_code == 200
    content = chooser.content.decode()
    assert f'href="{ADD_PAGE}?kind=railway"' in content
    assert f'href="{ADD_PAGE}?kind=github"' in content
    form = client.get(f"{ADD_PAGE}?kind=github").content.decode()
    assert 'type="password" name="secret_app_key"' in form
    assert 'value="https://api.github.com"' in form
    assert "secret_token" not in form


@pytest.mark.django_db
def test_the_kind_chooser_is_for_owners_only(client, observer, monkeypatch):
    monkeypatch.setitem(integrations._kinds, "github", IntegrationKind("github", secrets=()))
    client.force_login(observer)
    assert client.get(ADD_PAGE).status_code == 403
