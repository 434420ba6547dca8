"""The GitHub kind in the operator panel: chosen on the add page, its form built from
its declaration, each auth method's fields required, secrets write-only and masked,
and Owners only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from django.contrib.messages import get_messages
from django.db import connection

from controlplane.github import forget_installation_tokens
from controlplane.models import AuditEvent, Integration
from tests.github_server import GitHubServer

LIST = "/admin/controlplane/integration/"
ADD = f"{LIST}add/?kind=github"
PAT = "github_pat_11ABCDEFG0secretpart9876543210zyxw"


@pytest.fixture(scope="module")
def app_key() -> RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def github(app_key: RSAPrivateKey) -> Iterator[GitHubServer]:
    forget_installation_tokens()
    with GitHubServer() as server:
        server.add_app(
            "4242",
            app_key.public_key(),
            "77",
            {"contents": "read", "checks": "read", "metadata": "read"},
        )
        server.add_repository("octo-org/backend")
        yield server
    forget_installation_tokens()


def _pem(key: RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def _app_form(github: GitHubServer, key: RSAPrivateKey, **values: Any) -> dict[str, Any]:
    form = {
        "name": "github-app",
        "enabled": "on",
        # A browser's one-line password input drops the PEM's line breaks.
        "secret_private_key": _pem(key).replace("\n", ""),
        "setting_auth_method": "app",
        "setting_api_url": github.url,
        "setting_app_id": "4242",
        "setting_installation_id": "77",
        "setting_repository": "octo-org/backend",
        "_save": "Save",
    }
    form.update(values)
    return {k: v for k, v in form.items() if v is not None}


def _raw_credentials(integration: Integration) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT credentials FROM controlplane_integration WHERE id = %s", [integration.pk]
        )
        return str(cursor.fetchone()[0])


@pytest.mark.django_db
def test_the_add_page_offers_github_and_its_form_has_both_auth_methods(client, owner):
    client.force_login(owner)
    chooser = client.get(f"{LIST}add/").content.decode()
    assert f'href="{ADD}"' in chooser
    assert "GitHub" in chooser
    form = client.get(ADD).content.decode()
    assert 'type="password" name="secret_token"' in form
    assert 'type="password" name="secret_private_key"' in form
    assert 'name="setting_auth_method"' in form
    assert "GitHub App installation" in form
    assert 'value="https://api.github.com"' in form


@pytest.mark.django_db
def test_an_owner_adds_an_app_whose_key_is_stored_encrypted_and_never_shown(
    client, owner, observer, github, app_key
):
    client.force_login(owner)
    response = client.post(ADD, _app_form(github, app_key))
    assert response.status_code == 302, response.context["adminform"].form.errors
    integration = Integration.objects.get(name="github-app")
    assert integration.kind == Integration.Kind.GITHUB
    key_line = _pem(app_key).splitlines()[5]
    assert key_line not in _raw_credentials(integration)
    audit = json.dumps(list(AuditEvent.objects.values("before", "after")), default=str)
    assert key_line not in audit
    for persona in (owner, observer):
        client.force_login(persona)
        page = client.get(f"{LIST}{integration.pk}/change/").content.decode()
        assert key_line not in page
        assert "••••••••" in page
    # The key pasted on one line still signs: the test connects through the fake.
    client.force_login(owner)
    tested = client.post(f"{LIST}{integration.pk}/test-connection/", follow=True)
    shown = [str(m) for m in get_messages(tested.wsgi_request)]
    assert shown == [
        "github-app: Connected as App 'Code health', but octo-org/backend lacks permissions "
        "(for pull requests: write contents, write pull requests)."
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("values", "field", "error"),
    [
        (
            {"setting_installation_id": ""},
            "setting_installation_id",
            "A GitHub App needs its installation id",
        ),
        ({"setting_app_id": "my-app"}, "setting_app_id", "A GitHub App needs its app id"),
        (
            {"secret_private_key": "not a key"},
            "secret_private_key",
            "The GitHub App private key cannot be read",
        ),
        (
            {"setting_auth_method": "token", "secret_private_key": ""},
            "secret_token",
            "A GitHub integration with a token needs the token.",
        ),
        (
            {"setting_repository": "just-a-name"},
            "setting_repository",
            "Give the repository as owner/name",
        ),
    ],
)
def test_each_auth_method_needs_its_own_fields(
    client, owner, github, app_key, values, field, error
):
    client.force_login(owner)
    response = client.post(ADD, _app_form(github, app_key, **values))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert error in " ".join(errors[field])
    assert not Integration.objects.exists()


@pytest.mark.django_db
def test_a_token_integration_saves_with_the_token_write_only(client, owner, github):
    client.force_login(owner)
    form = {
        "name": "github-token",
        "enabled": "on",
        "secret_token": PAT,
        "setting_auth_method": "token",
        "setting_api_url": github.url,
        "_save": "Save",
    }
    assert client.post(ADD, form).status_code == 302
    integration = Integration.objects.get()
    assert integration.secrets == {"token": PAT}
    page = client.get(f"{LIST}{integration.pk}/change/").content.decode()
    assert PAT not in page
    assert "Personal access token: ••••••••" in page


@pytest.mark.django_db
@pytest.mark.parametrize("persona", ["observer", "operator"])
def test_only_owners_add_github_integrations(client, request, persona, github, app_key):
    client.force_login(request.getfixturevalue(persona))
    assert client.get(ADD).status_code == 403
    assert client.post(ADD, _app_form(github, app_key)).status_code == 403
    assert not Integration.objects.exists()
