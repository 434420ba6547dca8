"""The gateway over HTTP: a plain ASGI application for `/v1/chat/completions`,
`/v1/responses`, `/v1/messages`, `/v1/embeddings`, `/v1/audio/speech`,
`/v1/audio/transcriptions` and `/v1/models`, served at those paths by
`controlplane.asgi_routes`.

Why not a Django view: the gateway sits in front of every AI call another service
makes, so what it adds to a call's latency matters. Django's request path runs the
middleware stack and, under ASGI, hands each request to a fresh thread that opens
(and closes) its own database connection. Here a request goes straight to the
gateway's logic (`routing.gateway`) on a small pool of long-lived threads
(`controlplane.runtime.endpoint_threads`), each keeping its database connection
between requests. The host and HTTPS checks of the settings apply as in
Django (`controlplane.runtime.http_endpoints.refusal`); a service key is the only credential.

A streamed answer (server-sent events, or audio bytes) is sent piece by piece as the
provider produces them; when the client goes away mid-stream the call is closed at
once, so it settles and logs. A whole answer, and a stream's end, are sent before the
call's settlement and log row are written (on the same thread, at once after): the
caller does not wait for the bookkeeping.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings
from django.db import InterfaceError, OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from controlplane.audit import acting_as
from controlplane.runtime.endpoint_threads import run_on_pool
from controlplane.runtime.http_endpoints import (
    Receive,
    Scope,
    Send,
    header_map,
    refusal,
    security_headers,
)
from routing import (
    gateway,
    gateway_embeddings,
    gateway_messages,
    gateway_responses,
    gateway_speech,
    gateway_transcriptions,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
RunSync = Callable[[Callable[[], T]], Awaitable[T]]

ENDPOINTS: dict[str, tuple[str, Callable[[gateway.GatewayRequest], gateway.GatewayResponse]]] = {
    "/v1/chat/completions": ("POST", gateway.chat_completions),
    "/v1/responses": ("POST", gateway_responses.responses),
    "/v1/embeddings": ("POST", gateway_embeddings.embeddings),
    "/v1/audio/speech": ("POST", gateway_speech.speech),
    "/v1/models": ("GET", gateway.models),
    "/v1/messages": ("POST", gateway_messages.messages),
    "/v1/audio/transcriptions": ("POST", gateway_transcriptions.transcriptions),
}
# Endpoints whose bodies may be larger than DATA_UPLOAD_MAX_MEMORY_SIZE: the setting
# holding their limit, and the field a body over it is blamed on.
BODY_LIMITS: dict[str, tuple[str, str]] = {
    "/v1/audio/transcriptions": ("GATEWAY_TRANSCRIPTION_MAX_BYTES", "file"),
}


@dataclass(frozen=True)
class ErrorShape:
    """How an endpoint answers what fails before or outside its logic (a refused host,
    a wrong method, a body too large, a failure): in its own API's error shape."""

    response: Callable[..., gateway.GatewayResponse]
    stream_ending: Callable[[], bytes]


OPENAI_ERRORS = ErrorShape(
    gateway.error_response, lambda: gateway.stream_error_event() + b"data: [DONE]\n\n"
)
# Endpoints of other APIs than OpenAI's; every other answers as OpenAI does.
ERROR_SHAPES = {
    "/v1/messages": ErrorShape(gateway_messages.error_response, gateway_messages.stream_failure),
}


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


class GatewayApplication:
    """`run_sync` runs the gateway's (synchronous) logic off the event loop: by
    default on the gateway's thread pool; tests pass asgiref's thread-sensitive
    `sync_to_async`, so the logic shares the test's database transaction."""

    def __init__(self, run_sync: RunSync[Any] | None = None) -> None:
        self._run_sync = run_sync

    async def run(self, function: Callable[[], T]) -> T:
        if self._run_sync is not None:
            return await self._run_sync(function)
        return await run_on_pool(function)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = header_map(scope)
        method, handler = ENDPOINTS[scope["path"]]
        errors = ERROR_SHAPES.get(scope["path"], OPENAI_ERRORS)
        refused = refusal(scope, headers)
        if refused is not None:
            status, message = refused
            code = "invalid_host" if status == 400 else "https_required"
            response = errors.response(status, code, message)
        elif scope["method"] != method:
            response = errors.response(
                405, "method_not_allowed", f"{scope['path']} answers {method} only."
            )
            response.headers["Allow"] = method
        else:
            limit_setting, param = BODY_LIMITS.get(
                scope["path"], ("DATA_UPLOAD_MAX_MEMORY_SIZE", None)
            )
            limit = getattr(settings, limit_setting)
            try:
                body = await _read_body(receive, limit)
            except ClientGone:
                return
            except BodyTooLarge:
                response = errors.response(
                    413,
                    "request_too_large",
                    f"The body is over {limit:,} bytes ({limit_setting}).",
                    **({"param": param} if param else {}),
                )
            else:
                request = gateway.GatewayRequest(scope["method"], headers, body)
                address = (scope.get("client") or [None])[0]
                response = await self.run(
                    functools.partial(_serve, handler, request, address, errors)
                )
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": [
                        (name.lower().encode("latin-1"), value.encode("latin-1"))
                        for name, value in {
                            **security_headers(scope, headers),
                            **response.headers,
                            **_length(response),
                        }.items()
                    ],
                }
            )
            if response.stream is None:
                await send({"type": "http.response.body", "body": response.body})
            else:
                await self._send_stream(response, receive, send, errors)
        finally:
            # Recorded even when the answer could not be delivered: it was paid for. A
            # stream's end is sent first (the caller does not wait for the
            # bookkeeping); one closed early or failed has already recorded its call,
            # which a stream's `after` then leaves as it is.
            if response.after is not None:
                await self.run(functools.partial(_after, response.after))

    async def _send_stream(
        self, response: gateway.GatewayResponse, receive: Receive, send: Send, errors: ErrorShape
    ) -> None:
        """Server-sent events end with an error event on a failure; any other body
        (audio bytes) can only be ended there. A stream closed early (the client went
        away) settles and logs its call as it closes."""
        stream = response.stream
        assert stream is not None
        events = response.headers.get("Content-Type") == "text/event-stream"
        gone = asyncio.ensure_future(_disconnected(receive))
        ended = False
        try:
            while True:
                step = asyncio.ensure_future(self.run(functools.partial(next, stream, None)))
                await asyncio.wait({step, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    await step  # a thread cannot be interrupted: let the step end
                    return  # the client went away; `finally` closes the call
                try:
                    chunk = step.result()
                except Exception:
                    # Never a stream left open: the client gets an error and the end.
                    log.exception("a gateway stream failed")
                    ending = (
                        (response.failed_stream_ending or errors.stream_ending()) if events else b""
                    )
                    await send({"type": "http.response.body", "body": ending})
                    return
                if chunk is None:
                    ended = True  # the generator is done: nothing left to close
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            gone.cancel()
            if not ended:
                # Settles and logs the call now, if it has not finished (client gone).
                await self.run(stream.close)


def _length(response: gateway.GatewayResponse) -> dict[str, str]:
    """A whole answer's length, so that it is sent as it is rather than in chunks."""
    return {} if response.stream is not None else {"Content-Length": str(len(response.body))}


def _serve(
    handler: Callable[[gateway.GatewayRequest], gateway.GatewayResponse],
    request: gateway.GatewayRequest,
    address: str | None,
    errors: ErrorShape = OPENAI_ERRORS,
) -> gateway.GatewayResponse:
    with acting_as(None, address):
        try:
            return handler(request)
        except (RedisConnectionError, RedisTimeoutError):
            log.exception("the gateway cannot reach Redis")
            return _unavailable(errors, "Redis (the cache holding the routing state and toggles)")
        except (OperationalError, InterfaceError):
            log.exception("the gateway cannot reach the database")
            return _unavailable(errors, "The database")
        except Exception:
            log.exception("the gateway failed on %s", request.method)
            return errors.response(
                500, "server_error", "The gateway failed; the error is in its log."
            )


def _unavailable(errors: ErrorShape, dependency: str) -> gateway.GatewayResponse:
    """503 naming the dependency that is away: a client may retry, an operator knows
    where to look."""
    response = errors.response(
        503,
        "service_unavailable",
        f"{dependency} is unreachable; retry shortly.",
        error_type="service_unavailable",
    )
    response.headers["Retry-After"] = "5"
    return response


def _after(function: Callable[[], object]) -> None:
    try:
        function()
    except Exception:
        # The reservation stays held: the stale sweep writes it off.
        log.exception("could not record a gateway call after answering it")


async def _read_body(receive: Receive, limit: int | None) -> bytes:
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        part = message.get("body", b"")
        size += len(part)
        if limit is not None and size > limit:
            raise BodyTooLarge
        parts.append(part)
        if not message.get("more_body", False):
            return b"".join(parts)


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
