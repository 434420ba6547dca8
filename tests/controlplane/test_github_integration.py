"""The GitHub integration kind against a local fake GitHub: a token or an App's
installation token, the repository's permissions named when missing, rate limits
and refusals said plainly, and never the token or the key in what is shown."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from controlplane.github import (
    GitHubAuthError,
    GitHubClient,
    GitHubCredentials,
    GitHubRateLimited,
    forget_installation_tokens,
)
from controlplane.github_integration import check_github_connection
from controlplane.integrations import check_connection, run_connection_test
from controlplane.models import AuditEvent, Integration
from tests.github_server import Answer, GitHubServer
from tests.local_servers import closed_port

PAT = "github_pat_11ABCDEFG0secretpart9876543210zyxw"
PAT_PART = "0secretpart98765"
REPO = "octo-org/backend"
ALL_APP_PERMISSIONS = {
    "contents": "write",
    "pull_requests": "write",
    "checks": "read",
    "metadata": "read",
}


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)  # whole seconds, as GitHub says them

    def __call__(self) -> datetime:
        return self.now


def _pem(key: RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture(scope="module")
def app_key() -> RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_key() -> RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(autouse=True)
def _no_cached_tokens() -> Iterator[None]:
    forget_installation_tokens()
    yield
    forget_installation_tokens()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def github(clock: FakeClock) -> Iterator[GitHubServer]:
    with GitHubServer(clock=clock) as server:
        server.add_token(PAT, login="octocat")
        server.add_repository(REPO)
        yield server


def _token_integration(github: GitHubServer, repository: str = "", **settings: Any) -> Integration:
    integration = Integration(kind=Integration.Kind.GITHUB, name="github-token")
    integration.set_secrets({"token": PAT})
    integration.settings = {
        "auth_method": "token",
        "api_url": github.url,
        "repository": repository,
        **settings,
    }
    integration.save()
    return integration


def _app_integration(github: GitHubServer, key: RSAPrivateKey, repository: str = "") -> Integration:
    integration = Integration(kind=Integration.Kind.GITHUB, name="github-app")
    integration.set_secrets({"private_key": _pem(key)})
    integration.settings = {
        "auth_method": "app",
        "api_url": github.url,
        "app_id": "4242",
        "installation_id": "77",
        "repository": repository,
    }
    integration.save()
    return integration


def _app_credentials(github: GitHubServer, key: RSAPrivateKey) -> GitHubCredentials:
    return GitHubCredentials(
        api_url=github.url, app_id="4242", private_key=_pem(key), installation_id="77"
    )


# A personal access token


@pytest.mark.django_db
def test_a_token_connects_and_a_repository_it_can_write_is_ready_for_scans_and_prs(github):
    integration = _token_integration(github, repository=REPO)
    result = run_connection_test(integration)
    assert result.ok, result.message
    assert result.message == (
        f"Connected as 'octocat'; {REPO} can be scanned and receive pull requests."
    )
    user = github.requests[0]
    assert user.path == "/user"
    assert user.headers["authorization"] == f"Bearer {PAT}"
    assert user.headers["accept"] == "application/vnd.github+json"
    assert user.headers["x-github-api-version"] == "2022-11-28"
    assert [r.path for r in github.requests] == ["/user", f"/repos/{REPO}"]
    integration.refresh_from_db()
    assert integration.last_test_ok is True


@pytest.mark.django_db
def test_a_refused_token_says_why_and_never_shows_the_token(github):
    github.tokens.clear()  # revoked
    integration = _token_integration(github)
    result = run_connection_test(integration)
    assert not result.ok
    assert "GitHub refused the token (401 Bad credentials)" in result.message
    integration.refresh_from_db()
    assert integration.last_test_ok is False
    shown = integration.last_test_message + str(
        list(AuditEvent.objects.values_list("after", flat=True))
    )
    assert PAT_PART not in shown


@pytest.mark.django_db
def test_a_read_only_token_is_told_what_pull_requests_would_need(github):
    github.add_repository("octo-org/frontend", permissions={"pull": True, "push": False})
    result = check_connection(_token_integration(github, repository="octo-org/frontend"))
    assert result.ok  # scans work; pull requests are optional
    assert "lacks permissions (for pull requests: write contents, write pull requests)" in (
        result.message
    )


@pytest.mark.django_db
def test_a_repository_the_token_cannot_see_is_named(github):
    result = check_connection(_token_integration(github, repository="octo-org/secret"))
    assert not result.ok
    assert "Repository octo-org/secret was not found, or these credentials cannot see it" in (
        result.message
    )


# A GitHub App


@pytest.mark.django_db
def test_an_app_exchanges_its_signed_jwt_for_an_installation_token(github, app_key):
    github.add_app("4242", app_key.public_key(), "77", ALL_APP_PERMISSIONS)
    result = check_github_connection(_app_integration(github, app_key, repository=REPO))
    assert result.ok, result.message
    assert result.message == (
        f"Connected as App 'Code health'; {REPO} can be scanned and receive pull requests."
    )
    repository = github.requests[-1]
    assert repository.path == f"/repos/{REPO}"
    assert repository.bearer.startswith("ghs_installation")


@pytest.mark.django_db
def test_an_app_missing_permissions_is_told_which_for_scans_and_for_prs(github, app_key):
    github.add_app("4242", app_key.public_key(), "77", {"contents": "read", "metadata": "read"})
    result = check_connection(_app_integration(github, app_key, repository=REPO))
    assert not result.ok
    assert result.message == (
        f"Connected as App 'Code health', but {REPO} lacks permissions (for scans: read "
        "checks; for pull requests: write contents, write pull requests)."
    )


@pytest.mark.django_db
def test_an_app_signing_with_another_key_is_refused_without_showing_it(github, app_key, other_key):
    github.add_app("4242", app_key.public_key(), "77", ALL_APP_PERMISSIONS)
    integration = _app_integration(github, other_key)
    result = run_connection_test(integration)
    assert not result.ok
    assert "GitHub refused the App's signed JWT (401)" in result.message
    body = _pem(other_key).splitlines()[5]
    integration.refresh_from_db()
    assert body not in integration.last_test_message
    assert github.exchanges() == []


def test_the_installation_token_is_reused_then_refreshed_before_it_expires(github, app_key, clock):
    github.add_app("4242", app_key.public_key(), "77", ALL_APP_PERMISSIONS)
    credentials = _app_credentials(github, app_key)
    with GitHubClient(credentials, clock=clock) as client:
        first = client.get(f"/repos/{REPO}")
        assert first["full_name"] == REPO
        clock.now += timedelta(minutes=50)  # 10 minutes left: still good
        client.get(f"/repos/{REPO}")
    assert len(github.exchanges()) == 1
    used = {r.bearer for r in github.requests if r.path == f"/repos/{REPO}"}
    assert len(used) == 1
    # Another client in the same process shares the cache; with under 5 minutes left
    # it exchanges a fresh JWT (signed on the moved clock) for a new token.
    clock.now += timedelta(minutes=6)
    with GitHubClient(credentials, clock=clock) as client:
        client.get(f"/repos/{REPO}")
        client.get(f"/repos/{REPO}")
    assert len(github.exchanges()) == 2
    used = [r.bearer for r in github.requests if r.path == f"/repos/{REPO}"]
    assert used[2] == used[3] != used[0]


def test_a_revoked_installation_token_is_exchanged_again_on_the_next_request(
    github, app_key, clock
):
    github.add_app("4242", app_key.public_key(), "77", ALL_APP_PERMISSIONS)
    with GitHubClient(_app_credentials(github, app_key), clock=clock) as client:
        client.get(f"/repos/{REPO}")
        github.issued.clear()  # GitHub revoked it (the installation was suspended and back)
        with pytest.raises(GitHubAuthError, match="refused the installation token"):
            client.get(f"/repos/{REPO}")
        assert client.get(f"/repos/{REPO}")["full_name"] == REPO
    assert len(github.exchanges()) == 2


# Rate limits


def test_a_rate_limit_says_when_it_resets_instead_of_waiting(github, clock):
    resets_at = clock.now + timedelta(minutes=12)
    github.fail(github.rate_limited(resets_at))
    client = GitHubClient(GitHubCredentials(api_url=github.url, token=PAT), clock=clock)
    with client, pytest.raises(GitHubRateLimited) as raised:
        client.get("/user")
    assert raised.value.resets_at == resets_at
    assert str(raised.value) == (
        f"GitHub's API rate limit is used up (403); it resets at "
        f"{resets_at:%Y-%m-%d %H:%M:%S} UTC (in 12 min)."
    )
    assert PAT_PART not in str(raised.value)


@pytest.mark.django_db
def test_a_secondary_rate_limit_in_the_connection_test_names_its_wait(github):
    github.fail(Answer(429, {"message": "secondary rate limit"}, {"retry-after": "30"}))
    result = check_connection(_token_integration(github))
    assert not result.ok
    assert "rate limit is used up (429)" in result.message
    assert "(in 30 s)" in result.message


# Faults


@pytest.mark.django_db
def test_an_api_url_that_is_not_githubs_api_is_said_plainly(github):
    github.route("GET", r"/user", lambda received, groups: Answer(200, None))
    result = check_connection(_token_integration(github))
    assert not result.ok
    assert result.message.startswith("GitHub's answer for /user is not JSON: is the API URL right")


@pytest.mark.django_db
def test_an_unreachable_github_is_a_failed_test_not_an_error():
    integration = Integration(kind=Integration.Kind.GITHUB, name="github-down")
    integration.set_secrets({"token": PAT})
    integration.settings = {"auth_method": "token", "api_url": f"http://127.0.0.1:{closed_port()}"}
    integration.save()
    result = check_connection(integration)
    assert not result.ok
    assert result.message.startswith("Could not reach GitHub at http://127.0.0.1:")
    assert PAT_PART not in result.message
