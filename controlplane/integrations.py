"""What each integration kind needs: its fields, the headers its credentials travel
in, and its connection test.

A kind is declared here, in the core, by its fields only (`declare_kind`): which are
secret (stored encrypted in `Integration.credentials`, never shown again) and which
are plain settings (`Integration.settings`, with defaults). The admin builds its form
from the declaration, so a new kind (GitHub, Telegram, Discord) is a declaration and
a connection test, nothing more.

The app that uses a kind registers its connection test from its `AppConfig.ready()`
(healthmon registers Railway's), so the core never imports an app above it:

    register_connection_test(Integration.Kind.RAILWAY, test_railway)

A test gets the integration and returns a `ConnectionResult`; it raises nothing a
person could not read (a failure is a result with `ok=False` and the reason).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from controlplane import audit
from controlplane.crypto import mask
from controlplane.models import Integration


@dataclass(frozen=True)
class SecretField:
    """A credential: written in the admin, stored encrypted, never rendered back."""

    name: str
    label: str
    help_text: str = ""
    required: bool = True


@dataclass(frozen=True)
class SettingField:
    """A plain setting, shown and edited as text (or a choice), with a default."""

    name: str
    label: str
    default: str = ""
    help_text: str = ""
    choices: tuple[tuple[str, str], ...] = ()
    is_url: bool = False
    required: bool = True


# The request headers that carry a kind's credentials: (secrets, settings) -> headers.
AuthHeaders = Callable[[Mapping[str, str], Mapping[str, Any]], dict[str, str]]
# Checks across a kind's fields (one auth method needs these, another those):
# (secrets, settings) -> {field name: error}.
Validate = Callable[[Mapping[str, str], Mapping[str, Any]], dict[str, str]]


@dataclass(frozen=True)
class IntegrationKind:
    kind: str
    secrets: tuple[SecretField, ...]
    settings: tuple[SettingField, ...] = ()
    auth_headers: AuthHeaders | None = None
    validate: Validate | None = None

    @property
    def label(self) -> str:
        return str(dict(Integration.Kind.choices).get(self.kind, self.kind.title()))

    def setting_defaults(self) -> dict[str, str]:
        return {field.name: field.default for field in self.settings}


_kinds: dict[str, IntegrationKind] = {}


def declare_kind(declaration: IntegrationKind) -> IntegrationKind:
    _kinds[declaration.kind] = declaration
    return declaration


def declared_kinds() -> list[IntegrationKind]:
    """The declared kinds in the model's order (the add page's list), whatever order
    their modules were imported in."""
    from controlplane.models import Integration

    order = {kind: index for index, kind in enumerate(Integration.Kind.values)}
    return sorted(_kinds.values(), key=lambda declared: order.get(declared.kind, len(order)))


def kind_of(kind: str) -> IntegrationKind | None:
    return _kinds.get(kind)


def setting(integration: Integration, name: str) -> Any:
    """A setting's stored value, else its kind's default."""
    declaration = kind_of(integration.kind)
    defaults = declaration.setting_defaults() if declaration else {}
    value = integration.setting(name)
    return defaults.get(name) if value in (None, "") else value


def auth_headers(integration: Integration) -> dict[str, str]:
    """The headers a request to the kind's service carries its credentials in."""
    declaration = kind_of(integration.kind)
    if declaration is None or declaration.auth_headers is None:
        return {}
    declared = {f.name: setting(integration, f.name) for f in declaration.settings}
    return declaration.auth_headers(integration.secrets, {**integration.settings, **declared})


def masked_secrets(integration: Integration) -> str:
    """What a person may see of the secrets: each one's label and its last characters."""
    declaration = kind_of(integration.kind)
    secrets = integration.secrets
    labels = {f.name: f.label for f in declaration.secrets} if declaration else {}
    return ", ".join(
        f"{labels.get(name, name)}: {mask(value)}" for name, value in sorted(secrets.items())
    )


# Railway: account and workspace tokens go as a bearer token, project tokens in a
# header of their own (docs.railway.com/reference/public-api).
RAILWAY_API_URL = "https://backboard.railway.com/graphql/v2"
RAILWAY_TOKEN_TYPES = (
    ("account", "Account token"),
    ("workspace", "Workspace (team) token"),
    ("project", "Project token"),
)


def railway_headers(secrets: Mapping[str, str], settings: Mapping[str, Any]) -> dict[str, str]:
    token = secrets.get("token", "")
    if settings.get("token_type") == "project":
        return {"Project-Access-Token": token}
    return {"Authorization": f"Bearer {token}"}


RAILWAY = declare_kind(
    IntegrationKind(
        kind=Integration.Kind.RAILWAY,
        secrets=(
            SecretField(
                "token",
                "Token",
                help_text="An account, workspace or project token from Railway's dashboard.",
            ),
        ),
        settings=(
            SettingField(
                "token_type",
                "Token type",
                default="account",
                choices=RAILWAY_TOKEN_TYPES,
                help_text="Account and workspace tokens are sent as 'Authorization: Bearer', "
                "project tokens as 'Project-Access-Token'.",
            ),
            SettingField(
                "api_url",
                "API URL",
                default=RAILWAY_API_URL,
                is_url=True,
                help_text="Railway's public GraphQL endpoint.",
            ),
        ),
        auth_headers=railway_headers,
    )
)


@dataclass(frozen=True)
class ConnectionResult:
    ok: bool
    message: str


ConnectionTest = Callable[[Integration], ConnectionResult]

_tests: dict[str, ConnectionTest] = {}


def register_connection_test(kind: str, test: ConnectionTest) -> None:
    _tests[kind] = test


def check_connection(integration: Integration) -> ConnectionResult:
    """Run the kind's connection test and keep its result and time on the row."""
    test = _tests.get(integration.kind)
    if test is None:
        result = ConnectionResult(False, f"No connection test for {integration.kind}.")
    else:
        try:
            result = test(integration)
        except Exception as exc:  # a test must never break the page that ran it
            result = ConnectionResult(False, f"The test failed: {exc}")
    # A service's error may echo what it was sent; the message is shown and kept.
    result = ConnectionResult(result.ok, integration.without_secrets(result.message))
    integration.last_tested_at = timezone.now()
    integration.last_test_ok = result.ok
    integration.last_test_message = result.message[:2000]
    Integration._base_manager.filter(pk=integration.pk).update(
        last_tested_at=integration.last_tested_at,
        last_test_ok=result.ok,
        last_test_message=integration.last_test_message,
    )
    return result


def run_connection_test(integration: Integration) -> ConnectionResult:
    """A person asked for the test: run it and put it in the audit trail."""
    result = check_connection(integration)
    audit.record(
        "integration.tested",
        integration,
        after={"ok": result.ok, "message": integration.last_test_message},
    )
    return result
