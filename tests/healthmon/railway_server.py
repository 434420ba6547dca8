"""A fake of Railway's public GraphQL API on 127.0.0.1, for tests: a real HTTP server
in a thread, answering the queries the crawler and the connection test send, from
log lines the test adds.

    with RailwayServer() as railway:
        railway.add_line("boom", at=moment, severity="error")
        railway.fail(Failure(429, headers={"Retry-After": "7"}))   # the next request
        railway.outage = True                                      # 503 until False
        railway.tokens = {"new-token"}                             # others are refused
        integration.settings = {"api_url": railway.url}

The log queries answer as Railway does: the *last* `limit` lines of the window
(`startDate`/`endDate`, or `beforeDate`/`anchorDate` with `beforeLimit`), oldest
first, with nanosecond timestamps. `filter` understands `@level:<severity>` and
otherwise matches text in the message. A refused token gets GraphQL's
"Not Authorized" error in a 200 answer, as Railway sends it (`auth_status=401`
answers HTTP 401 instead). Every request is kept in `requests` (body and headers).
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from healthmon.railway.client import parse_timestamp
from tests.local_servers import ServedInThread


@dataclass(frozen=True)
class Failure:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=lambda: {"errors": [{"message": "failure"}]})


@dataclass(frozen=True)
class ReceivedRequest:
    headers: dict[str, str]  # names lower-cased
    query: str
    variables: dict[str, Any]


def railway_time(moment: datetime) -> str:
    """Railway's timestamps carry nanoseconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"


class RailwayServer(ServedInThread):
    def __init__(self, token: str = "railway-token") -> None:  # noqa: S107
        self.tokens = {token}
        self.lines: list[dict[str, Any]] = []
        self.http_lines: list[dict[str, Any]] = []
        self.deployments: dict[tuple[str, str], str] = {("svc-1", "env-1"): "dep-1"}
        self.me = {"name": "Ada Lovelace", "email": "ada@example.com"}
        self.outage = False
        # Railway may answer one line more than `limit` (the CLI trims it): do so too.
        self.one_more = False
        self.auth_status = 200
        self.rate_limit_headers: dict[str, str] = {}  # sent with every answer
        self.requests: list[ReceivedRequest] = []
        self._failures: deque[Failure] = deque()
        self._lock = threading.Lock()
        self.server = _Server(("127.0.0.1", 0), _handler_for(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/graphql/v2"

    def add_line(
        self,
        message: str,
        *,
        at: datetime,
        severity: str = "info",
        deployment: str = "dep-1",
        environment: str = "env-1",
        attributes: dict[str, Any] | None = None,
    ) -> None:
        with self._lock:
            self.lines.append(
                {
                    "timestamp": railway_time(at),
                    "message": message,
                    "severity": severity,
                    "attributes": [
                        {"key": key, "value": json.dumps(value)}
                        for key, value in (attributes or {}).items()
                    ],
                    "tags": {
                        "deploymentId": deployment,
                        "serviceId": "svc-1",
                        "environmentId": environment,
                    },
                }
            )

    def add_request(
        self,
        path: str,
        status: int,
        *,
        at: datetime,
        method: str = "GET",
        deployment: str = "dep-1",
    ) -> None:
        with self._lock:
            number = len(self.http_lines) + 1
            self.http_lines.append(
                {
                    "timestamp": railway_time(at),
                    "method": method,
                    "path": path,
                    "httpStatus": status,
                    "totalDuration": 12,
                    "requestId": f"req-{number}",
                    "host": "app.example.com",
                    "deploymentId": deployment,
                }
            )

    def fail(self, *failures: Failure) -> None:
        """Answer the next requests with these failures, in order."""
        with self._lock:
            self._failures.extend(failures)

    def log_queries(self) -> list[ReceivedRequest]:
        return [r for r in self.requests if "Logs(" in r.query]

    # -- answering -------------------------------------------------------------------

    def answer(self, request: ReceivedRequest) -> tuple[int, dict[str, str], dict[str, Any]]:
        with self._lock:
            self.requests.append(request)
            if self.outage:
                return 503, {}, {"errors": [{"message": "Service Unavailable"}]}
            if self._failures:
                failure = self._failures.popleft()
                return failure.status, failure.headers, failure.body
            headers = dict(self.rate_limit_headers)
            token = request.headers.get("project-access-token") or request.headers.get(
                "authorization", ""
            ).removeprefix("Bearer ")
            if token not in self.tokens:
                return self.auth_status, headers, {"errors": [{"message": "Not Authorized"}]}
            return 200, headers, {"data": self._data(request)}

    def _data(self, request: ReceivedRequest) -> dict[str, Any]:
        query, variables = request.query, request.variables
        if "deploymentLogs(" in query:
            lines = [
                line
                for line in self.lines
                if line["tags"]["deploymentId"] == variables["deploymentId"]
            ]
            return {
                "deploymentLogs": _window(
                    lines,
                    variables.get("filter"),
                    variables.get("startDate"),
                    variables.get("endDate"),
                    variables.get("limit"),
                    self.one_more,
                )
            }
        if "environmentLogs(" in query:
            lines = [
                line
                for line in self.lines
                if line["tags"]["environmentId"] == variables["environmentId"]
            ]
            return {"environmentLogs": _anchored(lines, variables, self.one_more)}
        if "httpLogs(" in query:
            lines = [
                line
                for line in self.http_lines
                if line["deploymentId"] == variables["deploymentId"]
            ]
            return {"httpLogs": _anchored(lines, variables, self.one_more)}
        if "serviceInstance(" in query:
            deployment = self.deployments.get((variables["serviceId"], variables["environmentId"]))
            return {
                "serviceInstance": {
                    "latestDeployment": deployment and {"id": deployment, "status": "SUCCESS"}
                }
            }
        if "projectToken" in query:
            return {"projectToken": {"projectId": "proj-1", "environmentId": "env-1"}}
        if "me {" in query:
            return {"me": self.me}
        raise AssertionError(f"the fake does not serve this query: {query[:80]}")


def _anchored(
    lines: list[dict[str, Any]], variables: dict[str, Any], one_more: bool
) -> list[dict[str, Any]]:
    return _window(
        lines,
        variables.get("filter"),
        variables.get("beforeDate"),
        variables.get("anchorDate"),
        variables.get("beforeLimit"),
        one_more,
    )


def _window(
    lines: list[dict[str, Any]],
    filter_: str | None,
    start: str | None,
    end: str | None,
    limit: int | None,
    one_more: bool,
) -> list[dict[str, Any]]:
    low = parse_timestamp(start) if start else None
    high = parse_timestamp(end) if end else None
    chosen = []
    for line in lines:
        moment = parse_timestamp(line["timestamp"])
        if (low and moment < low) or (high and moment > high):
            continue
        if filter_:
            if filter_.startswith("@level:"):
                if line.get("severity") != filter_.removeprefix("@level:"):
                    continue
            elif filter_ not in line.get("message", ""):
                continue
        chosen.append(line)
    chosen.sort(key=lambda line: parse_timestamp(line["timestamp"]))
    return chosen[-(limit + one_more) :] if limit else chosen


class _Server(ThreadingHTTPServer):
    daemon_threads = True


def _handler_for(fake: RailwayServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            request = ReceivedRequest(
                headers={name.lower(): value for name, value in self.headers.items()},
                query=str(body.get("query", "")),
                variables=body.get("variables") or {},
            )
            status, headers, answer = fake.answer(request)
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

    return Handler
