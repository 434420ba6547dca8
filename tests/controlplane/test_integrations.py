"""Integration kinds: their declared fields, the headers their credentials travel in,
and the connection test registry."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane import integrations
from controlplane.integrations import (
    RAILWAY_API_URL,
    ConnectionResult,
    auth_headers,
    check_connection,
    declared_kinds,
    kind_of,
    setting,
)
from controlplane.models import Integration

TOKEN = "rw-5e5e5e5e-secret-token-0123"


def _railway(**settings: Any) -> Integration:
    integration = Integration(kind=Integration.Kind.RAILWAY, name="railway", settings=settings)
    integration.set_secrets({"token": TOKEN})
    integration.save()
    return integration


def test_every_kind_of_the_model_is_declared_with_its_fields():
    assert [d.kind for d in declared_kinds()] == list(Integration.Kind.values)
    railway = kind_of(Integration.Kind.RAILWAY)
    assert railway is not None
    assert [f.name for f in railway.secrets] == ["token"]
    assert railway.setting_defaults() == {"token_type": "account", "api_url": RAILWAY_API_URL}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("token_type", "headers"),
    [
        ("account", {"Authorization": f"Bearer {TOKEN}"}),
        ("workspace", {"Authorization": f"Bearer {TOKEN}"}),
        ("project", {"Project-Access-Token": TOKEN}),
    ],
)
def test_railway_sends_each_token_type_in_its_header(token_type, headers):
    assert auth_headers(_railway(token_type=token_type)) == headers


@pytest.mark.django_db
def test_a_setting_not_stored_is_the_kinds_default():
    integration = _railway()
    assert setting(integration, "api_url") == RAILWAY_API_URL
    assert auth_headers(integration) == {"Authorization": f"Bearer {TOKEN}"}
    integration.settings = {"api_url": "http://127.0.0.1:8123/graphql/v2"}
    assert setting(integration, "api_url") == "http://127.0.0.1:8123/graphql/v2"


@pytest.mark.django_db
def test_a_connection_test_that_raises_is_a_failed_result_without_the_token(monkeypatch):
    def exploding(integration: Integration) -> ConnectionResult:
        raise RuntimeError(f"refused header Authorization: Bearer {TOKEN}")

    monkeypatch.setitem(integrations._tests, Integration.Kind.RAILWAY, exploding)
    integration = _railway()
    result = check_connection(integration)
    assert result.ok is False
    assert result.message.startswith("The test failed: refused header Authorization: Bearer ••")
    assert "secret-token" not in result.message
    integration.refresh_from_db()
    assert integration.last_test_ok is False
    assert integration.last_test_message == result.message


@pytest.mark.django_db
def test_an_error_recorded_by_a_part_using_it_never_keeps_the_token():
    integration = _railway()
    integration.record_error(f"401 Unauthorized for Bearer {TOKEN}")
    integration.refresh_from_db()
    assert integration.last_error == "401 Unauthorized for Bearer ••••••••0123"
    assert integration.last_error_at is not None
    integration.clear_error()
    integration.refresh_from_db()
    assert integration.last_error == ""
