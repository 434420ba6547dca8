"""A fake of GitHub's REST API on 127.0.0.1, for tests: a real HTTP server in a
thread that checks credentials as GitHub does and answers from what the test set up.

    with GitHubServer(clock=clock) as github:
        github.add_token("github_pat_...", login="octocat")
        github.add_app(app_id="42", public_key=key.public_key(), installation_id="7",
                       permissions={"contents": "read", "checks": "read"})
        github.add_repository("octo-org/backend", permissions={"pull": True, "push": False})
        github.fail(Failure(403, headers={"x-ratelimit-remaining": "0", ...}))  # next request
        integration.settings = {"api_url": github.url, ...}

Routes are a list of (method, path pattern, handler): a test or a later fake adds its
own with `github.route("GET", r"/repos/(?P<repo>[^/]+/[^/]+)/commits/(?P<sha>\\w+)/check-runs",
handler)`, a handler getting the `Received` request and the pattern's groups and
returning an `Answer`. Every request is kept in `requests`.

App JWTs are verified with the app's public key (RS256), and their `iss`, `iat` and
`exp` against the server's clock (the test's, so a test can move time forward);
installation tokens expire an hour after they are issued, on that clock.
"""

from __future__ import annotations

import json
import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from tests.local_servers import ServedInThread

INSTALLATION_TOKEN_LIFETIME = timedelta(hours=1)
MAX_JWT_LIFETIME = timedelta(minutes=10)


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


# A scripted failure, answered to the next request instead of its route.
Failure = Answer


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any

    @property
    def bearer(self) -> str:
        value = self.headers.get("authorization", "")
        return value.removeprefix("Bearer ") if value.startswith("Bearer ") else ""


@dataclass
class App:
    app_id: str
    public_key: RSAPublicKey
    name: str
    installations: dict[str, dict[str, str]]  # installation id -> permissions


@dataclass
class IssuedToken:
    expires_at: datetime
    installation_id: str


Handler = Callable[[Received, dict[str, str]], Answer]


class GitHubServer(ServedInThread):
    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self.clock = clock or (lambda: datetime.now(UTC))
        self.tokens: dict[str, str] = {}  # personal access token -> login
        self.apps: dict[str, App] = {}
        self.issued: dict[str, IssuedToken] = {}
        self.repositories: dict[str, dict[str, Any]] = {}
        self.requests: list[Received] = []
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._failures: deque[Answer] = deque()
        self._serial = count(1)
        self._lock = threading.Lock()
        self.route("GET", r"/user", self._user)
        self.route("GET", r"/app", self._app)
        self.route(
            "POST", r"/app/installations/(?P<installation>\d+)/access_tokens", self._exchange
        )
        self.route("GET", r"/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)", self._repository)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v3"

    # Setting up

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        """Answer `method` on paths matching `pattern` (after the /api/v3 prefix)."""
        self.routes.insert(0, (method, re.compile(f"^{pattern}$"), handler))

    def add_token(self, token: str, login: str = "octocat") -> None:
        self.tokens[token] = login

    def add_app(
        self,
        app_id: str,
        public_key: RSAPublicKey,
        installation_id: str,
        permissions: dict[str, str],
        name: str = "Code health",
    ) -> None:
        self.apps[app_id] = App(app_id, public_key, name, {installation_id: permissions})

    def add_repository(
        self, full_name: str, permissions: dict[str, bool] | None = None, **fields: Any
    ) -> None:
        """A repository; `permissions` is what a token's user may do with it (as the
        answer to a personal token shows it)."""
        owner, name = full_name.split("/")
        self.repositories[full_name] = {
            "full_name": full_name,
            "name": name,
            "owner": {"login": owner},
            "default_branch": "main",
            "private": True,
            "permissions": permissions or {"pull": True, "push": True, "admin": False},
            **fields,
        }

    def fail(self, *answers: Answer) -> None:
        """The next requests get these answers instead (a rate limit, a 401, an outage)."""
        with self._lock:
            self._failures.extend(answers)

    def rate_limited(self, resets_at: datetime, status: int = 403) -> Answer:
        return Answer(
            status,
            {"message": "API rate limit exceeded for user."},
            {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(resets_at.timestamp()))},
        )

    def exchanges(self) -> list[Received]:
        return [r for r in self.requests if r.path.endswith("/access_tokens")]

    # Answering

    def answer(self, received: Received) -> Answer:
        with self._lock:
            self.requests.append(received)
            if self._failures:
                return self._failures.popleft()
        if received.headers.get("accept") != "application/vnd.github+json":
            return Answer(415, {"message": "Unsupported 'Accept' header"})
        for method, pattern, handler in self.routes:
            match = pattern.match(received.path)
            if match and method == received.method:
                return handler(received, match.groupdict())
        return Answer(404, {"message": "Not Found"})

    def caller(self, received: Received) -> tuple[str, str] | None:
        """Who a request's token is: ("user", login) or ("installation", id)."""
        token = received.bearer
        if token in self.tokens:
            return ("user", self.tokens[token])
        issued = self.issued.get(token)
        if issued is not None and issued.expires_at > self.clock():
            return ("installation", issued.installation_id)
        return None

    def _user(self, received: Received, _: dict[str, str]) -> Answer:
        caller = self.caller(received)
        if caller is None or caller[0] != "user":
            return _bad_credentials() if caller is None else _forbidden()
        return Answer(200, {"login": caller[1], "type": "User"})

    def _app(self, received: Received, _: dict[str, str]) -> Answer:
        app = self._verified_app(received)
        if app is None:
            return _bad_jwt()
        return Answer(200, {"id": int(app.app_id), "slug": "code-health", "name": app.name})

    def _exchange(self, received: Received, groups: dict[str, str]) -> Answer:
        app = self._verified_app(received)
        if app is None:
            return _bad_jwt()
        installation = groups["installation"]
        if installation not in app.installations:
            return Answer(404, {"message": "Not Found"})
        token = f"ghs_installation{next(self._serial):04d}token"
        expires_at = self.clock() + INSTALLATION_TOKEN_LIFETIME
        self.issued[token] = IssuedToken(expires_at, installation)
        return Answer(
            201,
            {
                "token": token,
                "expires_at": expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "permissions": app.installations[installation],
                "repository_selection": "selected",
            },
        )

    def _repository(self, received: Received, groups: dict[str, str]) -> Answer:
        if self.caller(received) is None:
            return _bad_credentials()
        repository = self.repositories.get(f"{groups['owner']}/{groups['name']}")
        if repository is None:
            return Answer(404, {"message": "Not Found"})
        return Answer(200, repository)

    def _verified_app(self, received: Received) -> App | None:
        """The app whose key signed the request's JWT, if it is valid now."""
        token = received.bearer
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
            app = self.apps.get(str(claims.get("iss")))
            if app is None:
                return None
            # Dates are checked on the server's clock below, not the library's.
            jwt.decode(
                token,
                app.public_key,
                algorithms=["RS256"],
                options={"verify_exp": False, "verify_iat": False, "require": ["exp", "iat"]},
            )
        except jwt.PyJWTError:
            return None
        now = self.clock().timestamp()
        if not (claims["iat"] <= now < claims["exp"]):
            return None
        if claims["exp"] - now > MAX_JWT_LIFETIME.total_seconds():
            return None
        return app


def _bad_credentials() -> Answer:
    return Answer(401, {"message": "Bad credentials", "status": "401"})


def _bad_jwt() -> Answer:
    return Answer(401, {"message": "A JSON web token could not be decoded", "status": "401"})


def _forbidden() -> Answer:
    return Answer(403, {"message": "Resource not accessible by integration", "status": "403"})


def _handler_for(github: GitHubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            path = self.path.split("?", 1)[0].removeprefix("/api/v3")
            received = Received(
                method=self.command,
                path=path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=json.loads(raw) if raw else None,
            )
            answer = github.answer(received)
            body = b"" if answer.body is None else json.dumps(answer.body).encode()
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep the test output clean

    return Handler
