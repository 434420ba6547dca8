"""Fake package registries on 127.0.0.1, for the dependency audit's tests and
`bench_scan`: PyPI's JSON API, the npm registry and OSV (querybatch and vulns), each
a real HTTP server on a port of its own, answering from what it was told.

    with FakeRegistries() as registries:
        registries.publish("PyPI", "httpx", "0.28.1")
        registries.advise(Advisory("GHSA-1", "PyPI", "jinja2", fixed="3.1.6", cvss=...))
        registries.osv.fail(500)          # every answer a 500 from now on
        registries.npm.fail("garbage")    # 200 with a body that is not JSON
        registries.pypi.stop()            # down: connections refused
        registries.pypi.hold = threading.Event()  # no answer until it is set
        settings.update(registries.settings())

Each server keeps the requests it received (`requests`, "METHOD /path") so a test can
tell that a scan asked nothing.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import unquote

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

PYPI, NPM = "PyPI", "npm"


@dataclass(frozen=True)
class Advisory:
    """An OSV advisory affecting versions of one package from `introduced` up to (not
    including) `fixed`; its severity as a database level ("HIGH", "MODERATE"...) or a
    CVSS vector, or neither."""

    id: str
    ecosystem: str
    package: str
    fixed: str | None
    introduced: str = "0"
    summary: str = ""
    severity: str | None = None
    cvss: str | None = None

    def affects(self, ecosystem: str, name: str, version: str) -> bool:
        if ecosystem != self.ecosystem or _same(ecosystem, name) != _same(ecosystem, self.package):
            return False
        if _order(ecosystem, version) < _order(ecosystem, self.introduced):
            return False
        return self.fixed is None or _order(ecosystem, version) < _order(ecosystem, self.fixed)

    def as_osv(self) -> dict[str, Any]:
        events: list[dict[str, str]] = [{"introduced": self.introduced}]
        if self.fixed:
            events.append({"fixed": self.fixed})
        vuln: dict[str, Any] = {
            "id": self.id,
            "summary": self.summary,
            "affected": [
                {
                    "package": {"ecosystem": self.ecosystem, "name": self.package},
                    "ranges": [{"type": "ECOSYSTEM", "events": events}],
                }
            ],
        }
        if self.cvss:
            vuln["severity"] = [{"type": "CVSS_V3", "score": self.cvss}]
        if self.severity:
            vuln["database_specific"] = {"severity": self.severity}
        return vuln


def _same(ecosystem: str, name: str) -> str:
    return canonicalize_name(name) if ecosystem == PYPI else name


def _order(ecosystem: str, version: str) -> Any:
    if ecosystem == PYPI:
        try:
            return (Version(version), "")
        except InvalidVersion:
            return (Version("0"), version)
    core = version.lstrip("v").split("-", 1)[0].split("+", 1)[0]
    parts = [int(part) if part.isdigit() else 0 for part in core.split(".")]
    return (*parts, *[0] * (3 - len(parts)), 0 if "-" in version else 1)


class FakeServer:
    """One registry's server; `route(method, path, body)` answers (status, JSON)."""

    def __init__(self, name: str, route: Any) -> None:
        self.name = name
        self.route = route
        self.requests: list[str] = []
        self.failure: int | str | None = None
        # Set to an unset event, requests wait for it before being answered (a
        # registry that does not answer in time); set it to let them through.
        self.hold: threading.Event | None = None
        self._lock = threading.Lock()
        self._running = False
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test and benchmark output clean

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> None:
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        self._running = True

    def stop(self) -> None:
        """Down: the port is closed, so connecting is refused."""
        if self._running:
            self.server.shutdown()
            self._running = False
        self.server.server_close()

    def fail(self, how: int | str | None) -> None:
        """Answer every request with HTTP `how` (an int), with a 200 that is not JSON
        ("garbage"), or normally again (None)."""
        self.failure = how

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        with self._lock:
            self.requests.append(f"{method} {handler.path}")
        if self.hold is not None:
            self.hold.wait()
        status, body = 200, b""
        if self.failure == "garbage":
            body = b"<html>Service temporarily unavailable</html>"
        elif isinstance(self.failure, int):
            status, body = self.failure, b"failing as told"
        else:
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                status, answer = 400, {"error": "not JSON"}
            else:
                status, answer = self.route(method, unquote(handler.path), parsed)
            body = json.dumps(answer).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


class FakeRegistries:
    """PyPI, npm and OSV fakes sharing what they were told; started by `with`."""

    def __init__(self) -> None:
        self.latest: dict[tuple[str, str], str] = {}
        self.advisories: dict[str, Advisory] = {}
        self.pypi = FakeServer("PyPI", self._pypi)
        self.npm = FakeServer("npm", self._npm)
        self.osv = FakeServer("OSV", self._osv)

    def __enter__(self) -> Self:
        for server in self.servers:
            server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self.servers:
            server.stop()

    @property
    def servers(self) -> tuple[FakeServer, FakeServer, FakeServer]:
        return (self.pypi, self.npm, self.osv)

    @property
    def requests(self) -> list[str]:
        return [request for server in self.servers for request in server.requests]

    def settings(self) -> dict[str, str]:
        """The health monitor's settings that point the audit here."""
        return {
            "HEALTHMON_CODE_PYPI_URL": self.pypi.url,
            "HEALTHMON_CODE_NPM_URL": self.npm.url,
            "HEALTHMON_CODE_OSV_URL": self.osv.url,
        }

    def publish(self, ecosystem: str, name: str, latest: str) -> None:
        self.latest[(ecosystem, _same(ecosystem, name))] = latest

    def advise(self, advisory: Advisory) -> None:
        self.advisories[advisory.id] = advisory

    def _pypi(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        if method != "GET" or len(parts) != 3 or parts[0] != "pypi" or parts[2] != "json":
            return 404, {"message": "Not Found"}
        latest = self.latest.get((PYPI, canonicalize_name(parts[1])))
        if latest is None:
            return 404, {"message": "Not Found"}
        return 200, {"info": {"name": parts[1], "version": latest}, "releases": {}}

    def _npm(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        latest = self.latest.get((NPM, path.lstrip("/")))
        if method != "GET" or latest is None:
            return 404, {"error": "Not found"}
        return 200, {"name": path.lstrip("/"), "dist-tags": {"latest": latest}}

    def _osv(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "POST" and path == "/v1/querybatch":
            queries = (body or {}).get("queries") if isinstance(body, dict) else None
            if not isinstance(queries, list):
                return 400, {"code": 3, "message": "queries missing"}
            return 200, {"results": [self._query(query) for query in queries]}
        if method == "GET" and path.startswith("/v1/vulns/"):
            advisory = self.advisories.get(path.removeprefix("/v1/vulns/"))
            if advisory is None:
                return 404, {"code": 5, "message": "Bug not found."}
            return 200, advisory.as_osv()
        return 404, {"code": 5, "message": "Not found"}

    def _query(self, query: dict[str, Any]) -> dict[str, Any]:
        package = query.get("package") or {}
        ecosystem, name = str(package.get("ecosystem")), str(package.get("name"))
        version = str(query.get("version"))
        hits = [
            {"id": advisory.id, "modified": "2026-01-01T00:00:00Z"}
            for advisory in self.advisories.values()
            if advisory.affects(ecosystem, name, version)
        ]
        return {"vulns": hits} if hits else {}
