"""`POST /v1/logs`, OTLP/HTTP's log export, as a plain ASGI application served by
`controlplane.asgi_routes` beside the gateway, for the same reason as the gateway
(`routing/gateway_asgi.py`): a service pushes a batch every second or so, and
Django's request path (middleware, a fresh thread and database connection per
request) would cost more than reading the batch. The body is read on the event loop;
the key check, decoding and ingest run on the endpoint threads
(`controlplane.runtime.endpoint_threads`), which keep their database connection.

Answers follow the OTLP/HTTP specification: 200 with an `ExportLogsServiceResponse`
(and `partialSuccess` naming rejected records), otherwise a `google.rpc.Status` whose
message says what to fix, in the request's encoding. Status codes: 400 malformed
body, 401 no or unknown or revoked key, 403 source disabled, 405 not a POST, 413 body
over `HEALTHMON_OTLP_MAX_BYTES` (sent or decompressed), 415 content type or encoding
not OTLP's, 429 a source over its records a second (with Retry-After), 503 the
database or cache away (with Retry-After). OTLP exporters retry 429 and 503 only.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

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
from healthmon.ingest import ingest
from healthmon.ingest_keys import authenticate
from healthmon.otlp import flood
from healthmon.otlp.answers import Answer, accepted, refused
from healthmon.otlp.decoding import (
    JSON,
    PROTOBUF,
    Malformed,
    TooLarge,
    UnsupportedEncoding,
    decode,
    decompress,
    media_type,
)

log = logging.getLogger(__name__)

PATH = "/v1/logs"
KEY_HEADER = "x-ingest-key"
RunSync = Callable[[Callable[[], Answer]], Awaitable[Answer]]


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


class LogReceiver:
    """`run_sync` runs the synchronous part off the event loop: by default on the
    endpoint threads; tests pass asgiref's thread-sensitive `sync_to_async`, so it
    shares the test's database transaction."""

    def __init__(self, run_sync: RunSync | None = None) -> None:
        self._run_sync = run_sync

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = header_map(scope)
        answer = await self._answer(scope, receive, headers)
        if answer is None:
            return  # the client went away before sending its body
        await send(
            {
                "type": "http.response.start",
                "status": answer.status,
                "headers": [
                    (name.lower().encode("latin-1"), value.encode("latin-1"))
                    for name, value in {
                        **security_headers(scope, headers),
                        "Content-Type": answer.content_type,
                        **answer.headers,
                    }.items()
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer.body})

    async def _answer(
        self, scope: Scope, receive: Receive, headers: dict[str, str]
    ) -> Answer | None:
        kind = media_type(headers.get("content-type", ""))
        refused_here = refusal(scope, headers)
        if refused_here is not None:
            return refused(*refused_here, kind)
        if scope["method"] != "POST":
            return refused(405, f"{PATH} answers POST only.", kind, Allow="POST")
        if kind is None:
            return refused(
                415,
                f"Send the logs as {PROTOBUF} or {JSON} (OTLP/HTTP), not "
                f"{headers.get('content-type') or 'without a Content-Type'}.",
                None,
            )
        raw_key = presented_key(headers)
        if not raw_key:
            return _unauthorized(kind)
        try:
            body = await _read_body(receive, settings.HEALTHMON_OTLP_MAX_BYTES)
        except ClientGone:
            return None
        except BodyTooLarge:
            return _too_large(kind)
        encoding = headers.get("content-encoding", "")
        address = (scope.get("client") or [None])[0]
        work = functools.partial(receive_logs, raw_key, kind, encoding, body, address)
        if self._run_sync is not None:
            return await self._run_sync(work)
        return await run_on_pool(work)


def presented_key(headers: dict[str, str]) -> str:
    """The ingest key, from `Authorization: Bearer <key>` or `X-Ingest-Key: <key>`
    (OTEL_EXPORTER_OTLP_HEADERS can set either)."""
    scheme, _, credentials = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return headers.get(KEY_HEADER, "").strip()


def receive_logs(
    raw_key: str, kind: str, encoding: str, body: bytes, address: str | None
) -> Answer:
    """Everything after the body is read: key, decoding, flood check, ingest."""
    try:
        with acting_as(None, address):
            return _receive(raw_key, kind, encoding, body)
    except (RedisConnectionError, RedisTimeoutError):
        log.exception("the OTLP receiver cannot reach Redis")
        return refused(503, "The cache (Redis) is unreachable; retry shortly.", kind, **_retry(5))
    except (OperationalError, InterfaceError):
        log.exception("the OTLP receiver cannot reach the database")
        return refused(503, "The database is unreachable; retry shortly.", kind, **_retry(5))
    except Exception:
        log.exception("the OTLP receiver failed")
        return refused(500, "The log receiver failed; the error is in its log.", kind)


def _receive(raw_key: str, kind: str, encoding: str, body: bytes) -> Answer:
    key = authenticate(raw_key)
    if key is None:
        return _unauthorized(kind)
    source = key.source
    if not source.enabled:
        return refused(403, f"The log source {source.name!r} is disabled.", kind)
    try:
        decoded = decode(decompress(body, encoding, settings.HEALTHMON_OTLP_MAX_BYTES), kind)
    except UnsupportedEncoding as error:
        return refused(415, f"Content-Encoding {error} is not supported: use gzip or none.", kind)
    except TooLarge:
        return _too_large(kind)
    except Malformed as error:
        return refused(400, str(error), kind)
    wait = flood.admit(source.pk, len(decoded.records) + len(decoded.rejections))
    if wait:
        return refused(
            429,
            f"The log source {source.name!r} is over "
            f"{settings.HEALTHMON_OTLP_RECORDS_PER_SECOND:,} records a second "
            "(HEALTHMON_OTLP_RECORDS_PER_SECOND); retry after the Retry-After seconds.",
            kind,
            **_retry(wait),
        )
    result = ingest(source, decoded.records) if decoded.records else None
    rejections = decoded.rejections + (result.rejections if result else [])
    rejected = len(decoded.rejections) + (result.rejected if result else 0)
    return accepted(kind, rejected, rejections)


def _unauthorized(kind: str) -> Answer:
    return refused(
        401,
        "An active ingest key is required: send it as `Authorization: Bearer <key>` or "
        "`X-Ingest-Key: <key>` (an Owner issues keys in the admin, Control > Ingest keys).",
        kind,
        **{"WWW-Authenticate": "Bearer"},
    )


def _too_large(kind: str) -> Answer:
    return refused(
        413,
        f"The body is over {settings.HEALTHMON_OTLP_MAX_BYTES:,} bytes, as sent or "
        "decompressed (HEALTHMON_OTLP_MAX_BYTES): send smaller batches.",
        kind,
    )


def _retry(seconds: int) -> dict[str, str]:
    return {"Retry-After": str(seconds)}


async def _read_body(receive: Receive, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while True:
        message: dict[str, Any] = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        part = message.get("body", b"")
        size += len(part)
        if size > limit:
            raise BodyTooLarge
        parts.append(part)
        if not message.get("more_body", False):
            return b"".join(parts)
