"""Real HTTP servers on 127.0.0.1 that tests talk to instead of mocks."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from typing import Any, Self

SECRET_PATH = "/hooks/1234/s3cr3t-webhook-token"


class ServedInThread:
    """A local HTTP server (`self.server`), served on a thread of its own inside a
    `with` block: the fakes of services on the internet that tests start."""

    server: HTTPServer

    def __enter__(self) -> Self:
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class LocalWebhook(ServedInThread):
    """A real HTTP server on 127.0.0.1 that answers each POST with the next scripted status
    (then 204 once the script runs out) and records what it received. Given `hold`, it
    answers only once the test sets that event: a sender is then mid-request for as
    long as the test needs."""

    def __init__(
        self, statuses: list[int] | None = None, hold: threading.Event | None = None
    ) -> None:
        self.statuses = list(statuses or [])
        self.hold = hold
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                with webhook._lock:
                    webhook.received.append(
                        {
                            "path": self.path,
                            "content_type": self.headers.get("Content-Type", ""),
                            "json": json.loads(raw) if raw else None,
                        }
                    )
                    status = webhook.statuses.pop(0) if webhook.statuses else 204
                if webhook.hold is not None:
                    webhook.hold.wait()
                body = b"" if status == 204 else f"status {status}".encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output clean

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{SECRET_PATH}"


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
