"""A real HTTP server on 127.0.0.1 serving a model list, as OpenRouter's /api/v1/models."""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.local_servers import ServedInThread

MODELS_PATH = "/api/v1/models"
EMBEDDING_MODELS_PATH = "/api/v1/embeddings/models"


def listing(*models: dict[str, Any]) -> dict[str, Any]:
    return {"data": list(models)}


def listed_model(
    model_id: str,
    prompt: str | None = "0.000001",
    completion: str | None = "0.000002",
    *,
    parameters: tuple[str, ...] = ("tools", "temperature"),
    **fields: Any,
) -> dict[str, Any]:
    """One model as OpenRouter lists it: prices are strings of USD per token."""
    pricing = {"request": "0", "image": "0"}
    if prompt is not None:
        pricing["prompt"] = prompt
    if completion is not None:
        pricing["completion"] = completion
    return {
        "id": model_id,
        "name": model_id.split("/")[-1].title(),
        "context_length": 128000,
        "pricing": {**pricing, **fields.pop("pricing", {})},
        "supported_parameters": list(parameters),
        "architecture": {"input_modalities": ["text"], "output_modalities": ["text"]},
        **fields,
    }


class ModelListServer(ServedInThread):
    """Answers every GET with `status` and `body` (a dict is sent as JSON), after `delay`;
    a path given a body of its own in `bodies` (e.g. the embeddings list) with that."""

    def __init__(self, body: Any = None, status: int = 200, delay: float = 0) -> None:
        self.body = body
        self.status = status
        self.delay = delay
        self.requests: list[str] = []
        self.bodies: dict[str, tuple[int, Any]] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                time.sleep(server.delay)
                status, body = server.bodies.get(self.path, (server.status, server.body))
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (timeout tests)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output clean

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{MODELS_PATH}"
        self.embeddings_url = self.url.removesuffix(MODELS_PATH) + EMBEDDING_MODELS_PATH

    def serve(self, body: Any, status: int = 200) -> None:
        self.body, self.status = body, status

    def serve_embeddings(self, body: Any, status: int = 200) -> None:
        self.bodies[EMBEDDING_MODELS_PATH] = (status, body)
