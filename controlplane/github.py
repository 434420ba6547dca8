"""A small client of GitHub's REST API, for the parts of the product that read
repositories (healthmon's code-health scans) and open pull requests.

It authenticates as the GitHub integration says (`controlplane.github_integration`):
with a personal access token, or as a GitHub App installation. An App signs a short
JWT with its private key (RS256, `iss` = the app id) and exchanges it at
`POST /app/installations/{id}/access_tokens` for an installation token, which lasts
an hour: the token is kept in the process and exchanged again when less than
`REFRESH_MARGIN` remains, so every request does not cost an exchange.

Errors are `GitHubError`s with a message a person can act on; they never carry the
token or the key. A rate-limited answer raises `GitHubRateLimited` naming when the
limit resets: the caller decides whether to wait, the client never sleeps.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt

GITHUB_API_URL = "https://api.github.com"
API_VERSION = "2022-11-28"
# GitHub refuses an App JWT that expires more than 10 minutes ahead, and clocks drift:
# it is dated a minute back and lives 9 minutes.
JWT_BACKDATE = timedelta(seconds=60)
JWT_LIFETIME = timedelta(minutes=9)
REFRESH_MARGIN = timedelta(minutes=5)
TIMEOUT = httpx.Timeout(15.0, connect=5.0)
REPOSITORY_PATTERN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class GitHubError(Exception):
    """A failure a person can read: what GitHub said and what to check."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class GitHubAuthError(GitHubError):
    """GitHub refused the credentials (401)."""


class GitHubNotFound(GitHubError):
    """404: absent, or invisible to these credentials (GitHub answers 404 for both)."""


class GitHubRateLimited(GitHubError):
    def __init__(self, message: str, status: int, resets_at: datetime | None) -> None:
        super().__init__(message, status)
        self.resets_at = resets_at


@dataclass(frozen=True)
class GitHubCredentials:
    """How to authenticate: a token, or an App's id, private key and installation."""

    api_url: str = GITHUB_API_URL
    token: str = ""
    app_id: str = ""
    private_key: str = field(default="", repr=False)
    installation_id: str = ""

    @property
    def is_app(self) -> bool:
        return not self.token

    def cache_key(self) -> tuple[str, str, str, str]:
        # The key's digest, not the key: a changed key must not reuse the old token.
        digest = hashlib.sha256(self.private_key.encode()).hexdigest()
        return (self.api_url.rstrip("/"), self.app_id, self.installation_id, digest)


@dataclass(frozen=True)
class InstallationToken:
    token: str = field(repr=False)
    expires_at: datetime
    permissions: Mapping[str, str]


_installation_tokens: dict[tuple[str, str, str, str], InstallationToken] = {}
_tokens_lock = threading.Lock()


def forget_installation_tokens() -> None:
    """Drop the cached installation tokens (tests; a rotated key)."""
    with _tokens_lock:
        _installation_tokens.clear()


def normalize_private_key(text: str) -> str:
    """The PEM as GitHub gave it, even when pasted into a one-line input (which
    drops its line breaks): the base64 body re-wrapped between its markers."""
    match = re.search(r"-----BEGIN ([A-Z ]+)-----(.*?)-----END \1-----", text.strip(), re.S)
    if match is None:
        return text.strip()
    label, body = match.group(1), re.sub(r"\s+", "", match.group(2))
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""])


def app_jwt(app_id: str, private_key: str, now: datetime) -> str:
    """The JWT an App authenticates with, signed with its private key."""
    claims = {
        "iat": int((now - JWT_BACKDATE).timestamp()),
        "exp": int((now + JWT_LIFETIME).timestamp()),
        "iss": app_id,
    }
    try:
        return jwt.encode(claims, normalize_private_key(private_key), algorithm="RS256")
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        # The library's message may quote the key: say only what is wrong.
        raise GitHubError(
            "The GitHub App private key cannot be read: paste the whole .pem file "
            "GitHub generated (-----BEGIN RSA PRIVATE KEY----- ...)."
        ) from exc


class GitHubClient:
    """Requests to one GitHub (github.com or an Enterprise server) with one set of
    credentials. `clock` and `transport` are for tests."""

    def __init__(
        self,
        credentials: GitHubCredentials,
        *,
        clock: Clock = utc_now,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.credentials = credentials
        self.clock = clock
        self.base_url = credentials.api_url.rstrip("/") or GITHUB_API_URL
        self._http = httpx.Client(timeout=TIMEOUT, transport=transport, follow_redirects=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GitHubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Requests

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return _json(self.request("GET", path, params=params), path)

    def get_as_app(self, path: str) -> Any:
        """A GET as the App itself (its JWT), for the `/app` endpoints."""
        return _json(self.request("GET", path, as_app=True), path)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        as_app: bool = False,
    ) -> httpx.Response:
        """A request with the credentials' token (or, `as_app`, the App's JWT).
        Raises `GitHubError` for anything but a 2xx answer."""
        token = self._app_jwt() if as_app else self.access_token()
        try:
            return self._send(method, path, token, params=params, json=json, as_app=as_app)
        except GitHubAuthError:
            if self.credentials.is_app and not as_app:
                # A revoked installation token: the next request exchanges a new one.
                with _tokens_lock:
                    _installation_tokens.pop(self.credentials.cache_key(), None)
            raise

    def access_token(self) -> str:
        """The token requests carry: the personal token, or a fresh-enough
        installation token."""
        if not self.credentials.is_app:
            return self.credentials.token
        return self.installation_token().token

    def installation_token(self) -> InstallationToken:
        credentials = self.credentials
        if not (credentials.app_id and credentials.private_key and credentials.installation_id):
            raise GitHubError(
                "A GitHub App needs its app id, private key and installation id "
                "(or give a personal access token instead)."
            )
        key = credentials.cache_key()
        with _tokens_lock:
            cached = _installation_tokens.get(key)
        if cached is not None and cached.expires_at - self.clock() > REFRESH_MARGIN:
            return cached
        fresh = self._exchange()
        with _tokens_lock:
            _installation_tokens[key] = fresh
        return fresh

    def _exchange(self) -> InstallationToken:
        installation = self.credentials.installation_id
        path = f"/app/installations/{installation}/access_tokens"
        answer = _json(self._send("POST", path, self._app_jwt(), as_app=True), path)
        token = answer.get("token") if isinstance(answer, dict) else None
        expires_at = _parse_time(answer.get("expires_at")) if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token or expires_at is None:
            raise GitHubError("GitHub's answer to the installation token exchange has no token.")
        permissions = answer.get("permissions")
        return InstallationToken(
            token, expires_at, dict(permissions) if isinstance(permissions, dict) else {}
        )

    def _app_jwt(self) -> str:
        credentials = self.credentials
        if not (credentials.app_id and credentials.private_key):
            raise GitHubError("A GitHub App needs its app id and private key.")
        return app_jwt(credentials.app_id, credentials.private_key, self.clock())

    def _send(
        self,
        method: str,
        path: str,
        token: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        as_app: bool = False,
    ) -> httpx.Response:
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "Authorization": f"Bearer {token}",
            "User-Agent": "ai-ops-control-plane",
        }
        url = f"{self.base_url}/{path.lstrip('/')}"
        try:
            response = self._http.request(method, url, headers=headers, params=params, json=json)
        except httpx.HTTPError as exc:
            # httpx's messages name the URL at most, never the headers.
            raise GitHubError(f"Could not reach GitHub at {self.base_url}: {exc}") from exc
        if response.is_success:
            return response
        raise self._error(response, path, as_app)

    def _error(self, response: httpx.Response, path: str, as_app: bool) -> GitHubError:
        status = response.status_code
        said = _github_message(response)
        now = self.clock()
        limited = _rate_limit_reset(response, now)
        if status in (403, 429) and limited is not None:
            resets_at = limited
            wait = max(0, round((resets_at - now).total_seconds()))
            return GitHubRateLimited(
                f"GitHub's API rate limit is used up ({status}); it resets at "
                f"{resets_at:%Y-%m-%d %H:%M:%S} UTC (in {_duration(wait)}).",
                status,
                resets_at,
            )
        if status == 401:
            if as_app:
                message = (
                    "GitHub refused the App's signed JWT (401): check the app id and that "
                    "the private key is the app's current one."
                )
            elif self.credentials.is_app:
                message = "GitHub refused the installation token (401): test the connection again."
            else:
                message = (
                    "GitHub refused the token (401 Bad credentials): it is wrong, expired "
                    "or revoked. Make a new fine-grained token and save it."
                )
            return GitHubAuthError(message, status)
        if status == 404:
            return GitHubNotFound(
                f"GitHub answered 404 for {path}: it does not exist, or these credentials "
                "cannot see it.",
                status,
            )
        detail = f": {said}" if said else ""
        return GitHubError(f"GitHub answered {status} for {path}{detail}", status)


def _json(response: httpx.Response, path: str) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        # A proxy's login page or a wrong API URL (the web site, not its API).
        raise GitHubError(
            f"GitHub's answer for {path} is not JSON: is the API URL right "
            "(https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise)?",
            response.status_code,
        ) from exc


def _github_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    message = body.get("message") if isinstance(body, dict) else None
    return str(message)[:300] if message else ""


def _rate_limit_reset(response: httpx.Response, now: datetime) -> datetime | None:
    """When a rate-limited answer's limit resets, or None when it is no rate limit.
    GitHub says so with `retry-after` (secondary limits) or a used-up
    `x-ratelimit-remaining` with `x-ratelimit-reset` (epoch seconds)."""
    retry_after = response.headers.get("retry-after", "").strip()
    if retry_after.isdigit():
        return now + timedelta(seconds=int(retry_after))
    if response.headers.get("x-ratelimit-remaining", "").strip() == "0":
        reset = response.headers.get("x-ratelimit-reset", "").strip()
        if reset.isdigit():
            return datetime.fromtimestamp(int(reset), UTC)
        return now + timedelta(minutes=1)
    return None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _duration(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"
