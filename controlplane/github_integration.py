"""The GitHub integration kind: its fields, how its credentials are read, and its
connection test.

Two ways in: a fine-grained personal access token, or a GitHub App (app id, private
key, installation id), whose installation tokens `controlplane.github` obtains and
refreshes. The API URL is github.com's by default; GitHub Enterprise Server's is
`https://HOST/api/v3`. An optional repository (`owner/name`) is the one whose
permissions the connection test checks: code-health scans need to read its contents
and checks, pull requests need to write contents and pull requests.

Declared from the control plane's `AppConfig.ready()`, as the client is in the core.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controlplane.github import (
    GITHUB_API_URL,
    REPOSITORY_PATTERN,
    GitHubClient,
    GitHubCredentials,
    GitHubError,
    GitHubNotFound,
    app_jwt,
    utc_now,
)
from controlplane.integrations import (
    ConnectionResult,
    IntegrationKind,
    SecretField,
    SettingField,
    declare_kind,
    register_connection_test,
    setting,
)
from controlplane.models import Integration

AUTH_METHODS = (
    ("token", "Fine-grained personal access token"),
    ("app", "GitHub App installation"),
)

# What the product does with a repository, and the App permission levels it needs:
# (purpose, [(permission, level, how a person reads it)]).
APP_NEEDS = (
    ("scans", [("contents", "read", "read contents"), ("checks", "read", "read checks")]),
    (
        "pull requests",
        [
            ("contents", "write", "write contents"),
            ("pull_requests", "write", "write pull requests"),
        ],
    ),
)
LEVELS = {"read": 1, "write": 2, "admin": 3}


def validate_github(secrets: Mapping[str, str], settings: Mapping[str, Any]) -> dict[str, str]:
    """Each auth method's own required fields, and the repository's shape."""
    errors: dict[str, str] = {}
    if settings.get("auth_method") == "app":
        app_id = str(settings.get("app_id") or "")
        installation_id = str(settings.get("installation_id") or "")
        if not app_id.isdigit():
            errors["app_id"] = "A GitHub App needs its app id (a number, on the app's page)."
        if not installation_id.isdigit():
            errors["installation_id"] = (
                "A GitHub App needs its installation id (a number: the end of the "
                "installation's settings URL)."
            )
        key = secrets.get("private_key", "")
        if not key:
            errors["private_key"] = "A GitHub App needs its private key (the .pem file)."
        elif app_id.isdigit():
            try:
                app_jwt(app_id, key, utc_now())
            except GitHubError as exc:
                errors["private_key"] = str(exc)
    elif not secrets.get("token"):
        errors["token"] = "A GitHub integration with a token needs the token."  # noqa: S105
    repository = str(settings.get("repository") or "")
    if repository and not REPOSITORY_PATTERN.match(repository):
        errors["repository"] = "Give the repository as owner/name, e.g. octo-org/backend."
    return errors


GITHUB = declare_kind(
    IntegrationKind(
        kind=Integration.Kind.GITHUB,
        secrets=(
            SecretField(
                "token",
                "Personal access token",
                required=False,
                help_text="For the token method: a fine-grained token with access to the "
                "repositories (Contents, Checks read; Contents, Pull requests write for PRs).",
            ),
            SecretField(
                "private_key",
                "App private key",
                required=False,
                help_text="For the App method: the whole .pem file GitHub generated.",
            ),
        ),
        settings=(
            SettingField("auth_method", "Authentication", default="token", choices=AUTH_METHODS),
            SettingField(
                "api_url",
                "API URL",
                default=GITHUB_API_URL,
                is_url=True,
                help_text="GitHub Enterprise Server: https://HOST/api/v3.",
            ),
            SettingField("app_id", "App id", required=False, help_text="For the App method."),
            SettingField(
                "installation_id",
                "Installation id",
                required=False,
                help_text="For the App method: the number at the end of the installation's "
                "settings URL.",
            ),
            SettingField(
                "repository",
                "Repository",
                required=False,
                help_text="Optional, owner/name: the connection test checks its permissions.",
            ),
        ),
        validate=validate_github,
    )
)


def credentials_of(integration: Integration) -> GitHubCredentials:
    secrets = integration.secrets
    api_url = str(setting(integration, "api_url") or GITHUB_API_URL)
    if setting(integration, "auth_method") == "app":
        return GitHubCredentials(
            api_url=api_url,
            app_id=str(setting(integration, "app_id") or ""),
            private_key=secrets.get("private_key", ""),
            installation_id=str(setting(integration, "installation_id") or ""),
        )
    return GitHubCredentials(api_url=api_url, token=secrets.get("token", ""))


def client_for(integration: Integration, **options: Any) -> GitHubClient:
    return GitHubClient(credentials_of(integration), **options)


def check_github_connection(integration: Integration, **options: Any) -> ConnectionResult:
    """The credentials work (`/user` for a token; `/app` and the token exchange for
    an App) and, when a repository is set, what the product may do with it."""
    repository = str(setting(integration, "repository") or "")
    try:
        with client_for(integration, **options) as client:
            if client.credentials.is_app:
                app = client.get_as_app("/app")
                installation = client.installation_token()
                who = f"App '{_field(app, 'name') or _field(app, 'slug')}'"
                if not repository:
                    return ConnectionResult(True, f"Connected as {who}.")
                _repository(client, repository)
                return _verdict(who, repository, _app_missing(installation.permissions))
            user = client.get("/user")
            who = f"'{_field(user, 'login')}'"
            if not repository:
                return ConnectionResult(True, f"Connected as {who}.")
            repo = _repository(client, repository)
            permissions = repo.get("permissions")
            return _verdict(who, repository, _token_missing(permissions))
    except GitHubError as exc:
        return ConnectionResult(False, str(exc))


def _repository(client: GitHubClient, repository: str) -> dict[str, Any]:
    try:
        answer = client.get(f"/repos/{repository}")
    except GitHubNotFound as exc:
        raise GitHubError(
            f"Repository {repository} was not found, or these credentials cannot see it "
            "(a fine-grained token or an App installation must be given access to it)."
        ) from exc
    return answer if isinstance(answer, dict) else {}


def _app_missing(permissions: Mapping[str, str]) -> dict[str, list[str]]:
    missing: dict[str, list[str]] = {}
    for purpose, needs in APP_NEEDS:
        for permission, level, shown in needs:
            if LEVELS.get(permissions.get(permission, ""), 0) < LEVELS[level]:
                missing.setdefault(purpose, []).append(shown)
    return missing


def _token_missing(permissions: Any) -> dict[str, list[str]]:
    """A token's access as the repository answer shows it: `pull` (read) and
    `push` (write). The token's own fine-grained permissions are not visible through
    the API, so a narrower token shows up as a refused request in a scan."""
    granted = permissions if isinstance(permissions, dict) else {}
    missing: dict[str, list[str]] = {}
    if not granted.get("pull"):
        missing["scans"] = ["read contents", "read checks"]
    if not granted.get("push"):
        missing["pull requests"] = ["write contents", "write pull requests"]
    return missing


def _verdict(who: str, repository: str, missing: dict[str, list[str]]) -> ConnectionResult:
    if not missing:
        return ConnectionResult(
            True, f"Connected as {who}; {repository} can be scanned and receive pull requests."
        )
    lacking = "; ".join(f"for {purpose}: {', '.join(needs)}" for purpose, needs in missing.items())
    message = f"Connected as {who}, but {repository} lacks permissions ({lacking})."
    # Scans are the point; pull requests are optional (and off unless switched on).
    return ConnectionResult("scans" not in missing, message)


def _field(answer: Any, name: str) -> str:
    return str(answer.get(name) or "") if isinstance(answer, dict) else ""


def register() -> None:
    register_connection_test(Integration.Kind.GITHUB, check_github_connection)
