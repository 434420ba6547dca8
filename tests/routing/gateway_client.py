"""Django's test client, with the gateway's paths served as daphne serves them: by
the gateway's ASGI application (`routing.gateway_asgi`), not a Django view.

The application runs its logic through asgiref's thread-sensitive `sync_to_async`,
so it shares the test's database connection and transaction; everything else
(the host and method checks, reading the body, headers, streaming) is the code
that serves production traffic.
"""

from __future__ import annotations

import asyncio
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from django.http import HttpResponse, StreamingHttpResponse
from django.test import Client

from routing.gateway_asgi import ENDPOINTS, GatewayApplication


def _thread_sensitive(function: Any) -> Any:
    return sync_to_async(function, thread_sensitive=True)()


class GatewayClient(Client):
    application = GatewayApplication(run_sync=_thread_sensitive)

    def request(self, **request: Any) -> Any:
        environ = self._base_environ(**request)
        if environ["PATH_INFO"] not in ENDPOINTS:
            return super().request(**request)
        return self._through_asgi(environ)

    def _through_asgi(self, environ: dict[str, Any]) -> HttpResponse | StreamingHttpResponse:
        headers = [
            (name.removeprefix("HTTP_").replace("_", "-").lower().encode(), str(value).encode())
            for name, value in environ.items()
            if name.startswith("HTTP_")
        ]
        for name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if environ.get(name):
                headers.append((name.replace("_", "-").lower().encode(), environ[name].encode()))
        headers.append((b"host", environ["SERVER_NAME"].encode()))
        scope = {
            "type": "http",
            "method": environ["REQUEST_METHOD"],
            "path": environ["PATH_INFO"],
            "query_string": environ.get("QUERY_STRING", "").encode(),
            "headers": headers,
            "scheme": environ.get("wsgi.url_scheme", "http"),
            "client": (environ.get("REMOTE_ADDR", "127.0.0.1"), 50000),
        }
        body = environ["wsgi.input"].read()
        sent: list[dict[str, Any]] = []
        requested = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if requested:
                return requested.pop()
            await asyncio.Event().wait()  # the client stays until the answer ends
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        async_to_sync(self.application)(scope, receive, send)
        return _response(sent)


def _response(sent: list[dict[str, Any]]) -> HttpResponse | StreamingHttpResponse:
    start, bodies = sent[0], sent[1:]
    assert start["type"] == "http.response.start"
    headers = {name.decode(): value.decode() for name, value in start["headers"]}
    parts = [message["body"] for message in bodies if message.get("body")]
    if headers.get("content-type") == "text/event-stream":

        async def stream() -> Any:
            for part in parts:
                yield part

        return StreamingHttpResponse(stream(), status=start["status"], headers=headers)
    return HttpResponse(b"".join(parts), status=start["status"], headers=headers)
