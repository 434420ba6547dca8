"""GitHub repositories scanned through a fake GitHub: the repository found through
the API with the integration's token (or an App's installation token), cloned and
fetched over HTTP with that token sent in git's environment, and every refusal (a
revoked token, a rate limit, an unknown repository, a disabled integration) a failed
scan with its reason. The token is never shown or stored."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from controlplane.github import forget_installation_tokens
from healthmon.code_checkout import checkout_path
from healthmon.code_scans import scan_repository
from healthmon.models import Finding, Repository, Scan
from tests.github_server import Answer, GitHubServer, Received
from tests.healthmon.code_repos import CLEAN, UNUSED_IMPORT, commit, git, make_repository
from tests.healthmon.github_repos import (
    APP_ID,
    FULL_NAME,
    INSTALLATION_ID,
    TOKEN,
    app_integration,
    github_repository,
    push,
    serve,
    token_integration,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _code_settings(settings: Any, tmp_path: Path) -> Iterator[None]:
    settings.HEALTHMON_CODE_WORKDIR = tmp_path / "work"
    settings.HEALTHMON_CODE_TASK_MIN_SEVERITY = "high"
    forget_installation_tokens()
    yield
    forget_installation_tokens()


@pytest.fixture(scope="module")
def app_key() -> RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return make_repository(tmp_path / "backend", {"app.py": UNUSED_IMPORT})


@pytest.fixture
def github(source: Path) -> Iterator[GitHubServer]:
    with GitHubServer() as server:
        server.add_token(TOKEN, login="octocat")
        serve(server, source)
        yield server


@pytest.fixture
def repository(github: GitHubServer) -> Repository:
    return github_repository(token_integration(github))


def assert_token_kept(scan: Scan, caplog: pytest.LogCaptureFixture, *tokens: str) -> None:
    """No token in the scan's error, its summary, the logs or the checkout's git files."""
    checkout = checkout_path(scan.repository) / ".git"
    stored = [p for p in checkout.rglob("*") if p.is_file()] if checkout.is_dir() else []
    for token in tokens:
        assert token not in scan.error
        assert token not in str(scan.summary)
        assert token not in caplog.text
        for path in stored:
            assert token.encode() not in path.read_bytes(), path


def test_a_github_repository_is_cloned_with_the_token_and_scanned(
    github: GitHubServer, repository: Repository, source: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    scan = scan_repository(repository)

    assert scan.status == Scan.Status.SUCCEEDED, scan.error
    assert scan.commit == git(source, "rev-parse", "HEAD")
    assert scan.branch == "main"  # GitHub's default branch, from the API
    finding = Finding.objects.get(repository=repository, check_name="ruff")
    assert (finding.rule, finding.file, finding.line) == ("F401", "app.py", 1)
    assert github.git_requests, "the checkout came from GitHub over HTTP"
    assert {(r.token, r.status) for r in github.git_requests} == {(TOKEN, 200)}
    remote = git(checkout_path(repository), "remote", "get-url", "origin")
    assert remote == github.clone_url(FULL_NAME)
    assert_token_kept(scan, caplog, TOKEN)


def test_an_app_s_installation_token_is_exchanged_and_clones_the_repository(
    github: GitHubServer, app_key: RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    github.add_app(
        APP_ID, app_key.public_key(), INSTALLATION_ID, {"contents": "read", "checks": "read"}
    )
    repository = github_repository(app_integration(github, app_key))

    scan = scan_repository(repository)

    assert scan.status == Scan.Status.SUCCEEDED, scan.error
    assert len(github.exchanges()) == 1
    issued = set(github.issued)
    assert {r.token for r in github.git_requests} == issued
    assert {r.status for r in github.git_requests} == {200}
    assert Finding.objects.filter(repository=repository, rule="F401").exists()
    assert_token_kept(scan, caplog, *issued)


def test_a_second_scan_fetches_the_new_commit(
    github: GitHubServer, repository: Repository, source: Path
) -> None:
    first = scan_repository(repository)
    pushed = commit(source, {"app.py": CLEAN}, "drop the unused import")
    push(github, source)

    second = scan_repository(repository)

    assert second.status == Scan.Status.SUCCEEDED, second.error
    assert first.commit != pushed
    assert second.commit == pushed
    assert second.summary["ruff"]["fixed"] == 1
    assert Finding.objects.get(repository=repository).status == Finding.Status.FIXED


def test_a_revoked_token_fails_the_scan_with_github_s_reason(
    github: GitHubServer, repository: Repository, caplog: pytest.LogCaptureFixture
) -> None:
    scan_repository(repository)
    del github.tokens[TOKEN]

    scan = scan_repository(repository)

    assert scan.status == Scan.Status.FAILED
    assert "GitHub refused the token (401 Bad credentials)" in scan.error
    assert "revoked" in scan.error
    # The last successful scan's findings stay as they were.
    assert Finding.objects.get(repository=repository).status == Finding.Status.OPEN
    assert_token_kept(scan, caplog, TOKEN)


def test_a_token_revoked_before_the_clone_fails_with_git_s_refusal(
    github: GitHubServer, repository: Repository, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    shown = github.repositories[FULL_NAME]

    def answer_then_revoke(received: Received, groups: dict[str, str]) -> Answer:
        github.tokens.pop(TOKEN, None)
        return Answer(200, shown)

    github.route("GET", r"/repos/octo-org/backend", answer_then_revoke)

    scan = scan_repository(repository)

    assert scan.status == Scan.Status.FAILED
    assert scan.error.startswith("git clone failed: the server refused the credentials (HTTP 401)")
    assert [r.status for r in github.git_requests] == [401]
    assert_token_kept(scan, caplog, TOKEN)


def test_a_rate_limited_api_fails_the_scan_naming_the_reset_time(
    github: GitHubServer, repository: Repository
) -> None:
    resets_at = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=20)
    github.fail(github.rate_limited(resets_at))

    scan = scan_repository(repository)

    assert scan.status == Scan.Status.FAILED
    assert "rate limit" in scan.error
    assert f"resets at {resets_at:%Y-%m-%d %H:%M:%S} UTC" in scan.error
    assert not github.git_requests


def test_an_unknown_repository_fails_the_scan_clearly(github: GitHubServer) -> None:
    repository = github_repository(token_integration(github), full_name="octo-org/missing")

    scan = scan_repository(repository)

    assert scan.status == Scan.Status.FAILED
    assert scan.error == (
        "GitHub has no repository octo-org/missing, or the integration github-token (GitHub) "
        "cannot see it (give its token or App access to it)."
    )


def test_a_disabled_integration_fails_the_scan_without_asking_github(
    github: GitHubServer, repository: Repository
) -> None:
    assert repository.integration is not None
    repository.integration.enabled = False
    repository.integration.save()

    scan = scan_repository(repository)

    assert scan.status == Scan.Status.FAILED
    assert scan.error == "The integration github-token (GitHub) is disabled."
    assert not github.requests
