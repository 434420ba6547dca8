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
own with `github.route("GET", r"/repos/(?P<repo>[^/]+/[^/]+)/releases", handler)`, a
handler getting the `Received` request and the pattern's groups and returning an
`Answer`. Every request is kept in `requests`.

A repository added with `bare=Path` (a bare git repository) is also served over git's
smart HTTP at its `clone_url`, by git's own `git http-backend` run as a CGI: clones,
fetches and pushes, each refused with 401 unless it carries, as GitHub wants it,
`Authorization: Basic base64("x-access-token:" + token)` with a token the fake knows
or an installation token it issued. A push also needs write access (the user's
`push` permission, or an installation's `contents: write`). Git requests are kept in
`git_requests`.

Check runs and their annotations (`add_check_run`) are served, paginated as GitHub
does (`per_page` up to 100, 30 by default), to callers with the checks permission.

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
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from tests.git_http import GIT_PATH, PUSH_SERVICE, GitRequest, basic_token, http_backend
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
    query: str = ""

    @property
    def params(self) -> dict[str, str]:
        """The query string's parameters (the last of a repeated one)."""
        return dict(parse_qsl(self.query))

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


@dataclass
class CheckRun:
    id: int
    repository: str
    head_sha: str
    name: str
    status: str
    conclusion: str | None
    annotations: list[dict[str, Any]]


Handler = Callable[[Received, dict[str, str]], Answer]


class GitHubServer(ServedInThread):
    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self.clock = clock or (lambda: datetime.now(UTC))
        self.tokens: dict[str, str] = {}  # personal access token -> login
        self.apps: dict[str, App] = {}
        self.issued: dict[str, IssuedToken] = {}
        self.repositories: dict[str, dict[str, Any]] = {}
        self.bare: dict[str, Path] = {}  # full name -> the bare repository served by git
        self.check_runs: dict[int, CheckRun] = {}
        self.requests: list[Received] = []
        self.git_requests: list[GitRequest] = []
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
        self.route("GET", f"{_REPO}/commits/(?P<ref>[^/]+)/check-runs", self._check_runs)
        self.route("GET", f"{_REPO}/check-runs/(?P<id>\\d+)/annotations", self._annotations)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.root = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = f"{self.root}/api/v3"

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
        self,
        full_name: str,
        permissions: dict[str, bool] | None = None,
        bare: Path | None = None,
        **fields: Any,
    ) -> None:
        """A repository; `permissions` is what a token's user may do with it (as the
        answer to a personal token shows it). With `bare`, a bare git repository, it
        is served over git's smart HTTP at its `clone_url`."""
        owner, name = full_name.split("/")
        if bare is not None:
            self.bare[full_name] = bare
            fields.setdefault("clone_url", self.clone_url(full_name))
        self.repositories[full_name] = {
            "full_name": full_name,
            "name": name,
            "owner": {"login": owner},
            "default_branch": "main",
            "private": True,
            "permissions": permissions or {"pull": True, "push": True, "admin": False},
            **fields,
        }

    def clone_url(self, full_name: str) -> str:
        return f"{self.root}/{full_name}.git"

    def add_check_run(
        self,
        full_name: str,
        head_sha: str,
        name: str,
        *,
        status: str = "completed",
        conclusion: str | None = "failure",
        annotations: list[dict[str, Any]] | None = None,
    ) -> int:
        """A check run on commit `head_sha` and its annotations (GitHub's fields:
        path, start_line, end_line, annotation_level, title, message); its id."""
        run_id = next(self._serial)
        finished = conclusion if status == "completed" else None
        self.check_runs[run_id] = CheckRun(
            run_id, full_name, head_sha, name, status, finished, list(annotations or [])
        )
        return run_id

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

    def _can_read_checks(self, received: Received) -> Answer | None:
        """None when the caller may read check runs, else GitHub's refusal."""
        caller = self.caller(received)
        if caller is None:
            return _bad_credentials()
        if caller[0] == "installation" and not self._installation_may(caller[1], "checks"):
            return _forbidden()
        return None

    def _installation_may(self, installation: str, permission: str, level: str = "read") -> bool:
        for app in self.apps.values():
            granted = app.installations.get(installation, {}).get(permission)
            if granted == "write" or granted == level:
                return True
        return False

    def _check_runs(self, received: Received, groups: dict[str, str]) -> Answer:
        refused = self._can_read_checks(received)
        if refused is not None:
            return refused
        full_name = f"{groups['owner']}/{groups['name']}"
        if full_name not in self.repositories:
            return Answer(404, {"message": "Not Found"})
        runs = [
            _check_run_json(run)
            for run in self.check_runs.values()
            if run.repository == full_name and run.head_sha == groups["ref"]
        ]
        return Answer(200, {"total_count": len(runs), "check_runs": _page(runs, received)})

    def _annotations(self, received: Received, groups: dict[str, str]) -> Answer:
        refused = self._can_read_checks(received)
        if refused is not None:
            return refused
        run = self.check_runs.get(int(groups["id"]))
        if run is None or run.repository != f"{groups['owner']}/{groups['name']}":
            return Answer(404, {"message": "Not Found"})
        return Answer(200, _page(run.annotations, received))

    # Git over smart HTTP

    def serve_git(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Answer:
        """A git request: refused without the token (401, as GitHub asks git for a
        password), else answered by `git http-backend` on the bare repository."""
        path, _, query = target.partition("?")
        match = GIT_PATH.match(path)
        full_name = f"{match['owner']}/{match['name']}" if match else ""
        bare = self.bare.get(full_name)
        if match is None or bare is None:
            return Answer(404, "Repository not found.")
        rest = match["rest"]
        service = PUSH_SERVICE if PUSH_SERVICE in (rest + query) else "git-upload-pack"
        token = basic_token(headers.get("authorization", ""))
        status = self._git_refusal(full_name, token, service)
        if status is None:
            answer = Answer(*http_backend(bare, rest, query, method, headers, body))
        elif status == 401:
            answer = Answer(
                401, "Invalid username or token.", {"WWW-Authenticate": 'Basic realm="GitHub"'}
            )
        else:
            answer = Answer(status, f"Permission to {full_name}.git denied.")
        with self._lock:
            self.git_requests.append(
                GitRequest(method, rest, full_name, service, token, answer.status)
            )
        return answer

    def _git_refusal(self, full_name: str, token: str, service: str) -> int | None:
        caller = self.caller(Received("GET", "", {"authorization": f"Bearer {token}"}, None))
        if not token or caller is None:
            return 401
        if service != PUSH_SERVICE:
            return None
        if caller[0] == "installation":
            return None if self._installation_may(caller[1], "contents", "write") else 403
        may_push = self.repositories[full_name]["permissions"].get("push")
        return None if may_push else 403

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


_REPO = r"/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)"


def _page(items: list[Any], received: Received) -> list[Any]:
    """One page of `items`, by the request's `page` and `per_page` (GitHub's
    default 30, at most 100)."""
    params = received.params
    per_page = min(100, int(params.get("per_page") or 30))
    page = max(1, int(params.get("page") or 1))
    return items[(page - 1) * per_page : page * per_page]


def _check_run_json(run: CheckRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "name": run.name,
        "head_sha": run.head_sha,
        "status": run.status,
        "conclusion": run.conclusion,
        "output": {
            "title": f"{run.name}: {len(run.annotations)} annotations",
            "annotations_count": len(run.annotations),
        },
    }


def _bad_credentials() -> Answer:
    return Answer(401, {"message": "Bad credentials", "status": "401"})


def _bad_jwt() -> Answer:
    return Answer(401, {"message": "A JSON web token could not be decoded", "status": "401"})


def _forbidden() -> Answer:
    return Answer(403, {"message": "Resource not accessible by integration", "status": "403"})


def _handler_for(github: GitHubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            raw = self._body()
            headers = {k.lower(): v for k, v in self.headers.items()}
            if not self.path.startswith("/api/v3/"):
                self._reply(github.serve_git(self.command, self.path, headers, raw))
                return
            path, _, query = self.path.partition("?")
            received = Received(
                method=self.command,
                path=path.removeprefix("/api/v3"),
                headers=headers,
                body=json.loads(raw) if raw else None,
                query=query,
            )
            self._reply(github.answer(received))

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""
            chunks = []  # git sends a large push chunked
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)

        def _reply(self, answer: Answer) -> None:
            if isinstance(answer.body, bytes | str):
                body = answer.body if isinstance(answer.body, bytes) else answer.body.encode()
                content_type = "text/plain; charset=utf-8"
            else:
                body = b"" if answer.body is None else json.dumps(answer.body).encode()
                content_type = "application/json; charset=utf-8"
            self.send_response(answer.status)
            if "Content-Type" not in answer.headers:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep the test output clean

    return Handler
