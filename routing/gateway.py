"""The OpenAI-compatible gateway: other services send their AI calls through here.

`POST /v1/chat/completions` and `GET /v1/models`, authenticated by service API keys
(`Authorization: Bearer cpk_...`). Each call is an operation (the key's default, or
the `X-Operation` header) and goes through `routing.calls`: kill switches (503),
approvals (403 with the approval id to wait on; retry with `X-Approval-Id`), budgets
(429 naming the budget), routes with fallbacks, exact cost in the log. Streams are
passed through as the provider sent them.

This module is the gateway's logic, on a plain `GatewayRequest` and
`GatewayResponse`; `routing.gateway_asgi` serves it over HTTP, outside Django's
request path (no session, CSRF or template middleware: a service key is the only
credential here), so the gateway adds as little as it can to every AI call.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from controlplane.models import toggle_enabled
from controlplane.money import dumps_exact
from routing import call_preparation, calls
from routing.call_refusals import CallFailed, CallRefused, TooLong
from routing.call_units import UnmeasurableRequest, chat_units
from routing.gateway_requests import (
    InvalidRequest,
    approval_id,
    completion_limit,
    header_value,
    operation_header,
    parse_chat_request,
)
from routing.models import AIModel, ServiceKey
from routing.providers.base import StreamChunk
from routing.snapshots import KeySnapshot, Reading, RoutingTable, read, routing_table

log = logging.getLogger(__name__)

HANDLED_FIELDS = {"model", "messages", "tools", "max_tokens", "stream", "stream_options"}


@dataclass
class GatewayRequest:
    method: str
    headers: Mapping[str, str]  # names in lower case
    body: bytes = b""

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


@dataclass
class GatewayResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    # A streamed answer: the events, produced as the provider sends them. Closing it
    # early (the client went away) settles and logs the call.
    stream: Generator[bytes] | None = None
    # What to run once the answer is sent: the call's settlement and log row. With a
    # stream, it runs however the stream ended, so it must leave a call the stream
    # recorded itself (closed early, or failed) as it is.
    after: Callable[[], object] | None = None
    # What ends a stream that failed in the gateway itself, in the stream's dialect
    # (chat's error event and `[DONE]` unless told).
    failed_stream_ending: bytes = b""


def error_response(
    status: int, code: str | None, message: str, *, error_type: str | None = None, **details: Any
) -> GatewayResponse:
    """An OpenAI-style error: `type` is the kind (the code itself unless told)."""
    body = {"error": {"message": message, "type": error_type or code, "code": code, **details}}
    return json_response(body, status=status)


def invalid_request(exc: InvalidRequest) -> GatewayResponse:
    """400 as OpenAI answers a malformed request: `param` names the field at fault."""
    return error_response(
        400, exc.code, str(exc), error_type="invalid_request_error", param=exc.param
    )


def json_response(
    body: Any,
    headers: dict[str, str] | None = None,
    status: int = 200,
    *,
    write: Callable[[Any], str] = dumps_exact,
) -> GatewayResponse:
    """`body` as JSON; `write` is `dumps_built` for a body the gateway built itself."""
    return GatewayResponse(
        status, {"Content-Type": "application/json", **(headers or {})}, write(body).encode()
    )


def bearer(request: GatewayRequest) -> str | None:
    header = request.header("Authorization")
    if not header.startswith("Bearer "):
        return None
    return header.removeprefix("Bearer ").strip()


def _service_key(request: GatewayRequest) -> KeySnapshot | None:
    raw = bearer(request)
    key = routing_table().service_key(raw) if raw is not None else None
    if key is not None:
        _mark_used(key)
    return key


def _look_up(
    raw: str | None, header_operation: str, default_operation: str | None = None
) -> tuple[KeySnapshot | None, Reading | None]:
    """The caller's service key (`raw`, as presented) and the routing state its call
    needs, in one round trip to the cache: the table's version, the call's switches
    and its models' cooldowns. A key revoked a moment ago is refused: the version says
    so."""
    if raw is None:
        return None, None

    def keys(table: RoutingTable) -> list[str]:
        key = table.service_key(raw)
        if key is None:
            return []
        operation = header_operation or default_operation or key.default_operation
        return call_preparation.state_keys(table, operation, via_gateway=True)

    reading = read(keys)
    key = reading.table.service_key(raw)
    if key is None:
        return None, None
    _mark_used(key)
    return key, reading


_marked: dict[int, datetime] = {}  # key -> when this process last wrote its last use


def _mark_used(key: KeySnapshot) -> None:
    """Last use to the minute is enough: at most one cheap, conditional write a
    minute per key and process."""
    now = timezone.now()
    stale = now - timedelta(minutes=1)
    known = max(filter(None, (key.last_used_at, _marked.get(key.pk))), default=None)
    if known is None or known <= stale:
        _marked[key.pk] = now
        ServiceKey._base_manager.filter(pk=key.pk).exclude(last_used_at__gt=stale).update(
            last_used_at=now
        )


def _context(
    request: GatewayRequest,
    key: KeySnapshot,
    reading: Reading | None,
    operation: str,
    default_operation: str | None = None,
) -> calls.CallContext:
    return calls.CallContext(
        operation=operation or default_operation or key.default_operation,
        mode=header_value(request.headers, "X-Mode") or None,
        service=key.service,
        approval_id=approval_id(request.headers),
        via_gateway=True,
        reading=reading,
    )


class KeyRefused(Exception):
    """No service key, or one that is not (or no longer) valid: 401."""


def open_call(
    request: GatewayRequest, raw_key: str | None, default_operation: str | None = None
) -> calls.CallContext:
    """The call a request makes, once its service key (`raw_key`, as the endpoint reads
    it) is known good: raises `KeyRefused`, then `InvalidRequest` for its headers. Its
    operation is `X-Operation`, else `default_operation` (an endpoint whose calls are
    of another kind than chat has one of its own: `embeddings`...), else the key's."""
    try:
        operation, refused = operation_header(request.headers), None
    except InvalidRequest as exc:
        operation, refused = "", exc  # answered once the key is known good
    key, reading = _look_up(raw_key, operation, default_operation)
    if key is None:
        raise KeyRefused
    if refused is not None:
        raise refused
    return _context(request, key, reading, operation, default_operation)


def authorised(
    request: GatewayRequest, default_operation: str | None = None
) -> calls.CallContext | GatewayResponse:
    """The call's context, or the OpenAI-style answer refusing it: 401 without a valid
    service key (Bearer), 400 for a malformed header (once the key is known good)."""
    try:
        return open_call(request, bearer(request), default_operation)
    except KeyRefused:
        return error_response(
            401, "invalid_api_key", "A valid service API key is required (Bearer)."
        )
    except InvalidRequest as exc:
        return invalid_request(exc)


def refusal_response(exc: CallRefused | CallFailed, context: calls.CallContext) -> GatewayResponse:
    """A call refused (a switch, an approval, a budget) or failed, as an OpenAI error."""
    if isinstance(exc, CallFailed):
        return error_response(502, "upstream_error", str(exc), request_id=context.request_id)
    refusal = error_response(
        exc.status,
        exc.code,
        str(exc),
        error_type=exc.error_type,
        request_id=context.request_id,
        **exc.details,
    )
    if exc.details.get("retry_after") is not None:
        # Clients (the openai package among them) read the wait from the header.
        refusal.headers["Retry-After"] = str(exc.details["retry_after"])
    return refusal


def chat_completions(request: GatewayRequest) -> GatewayResponse:
    context = authorised(request)
    if isinstance(context, GatewayResponse):
        return context
    try:
        body = parse_chat_request(request.body)
        units = chat_units(body["messages"])
    except UnmeasurableRequest as exc:
        return invalid_request(InvalidRequest(str(exc), param=exc.param))
    except InvalidRequest as exc:
        return invalid_request(exc)
    max_tokens, max_tokens_param = completion_limit(body)
    arguments: dict[str, Any] = {
        "tools": body.get("tools"),
        "max_tokens": max_tokens,
        "extra": {k: v for k, v in body.items() if k not in HANDLED_FIELDS},
        "model_requested": str(body.get("model") or ""),
        "units": units,
    }
    try:
        if body.get("stream"):
            call = calls.stream(context, body["messages"], **arguments)
            return GatewayResponse(
                200,
                {
                    "Content-Type": "text/event-stream",
                    "Cache-Control": "no-cache",
                    "X-Request-Id": context.request_id,
                },
                stream=_sse_events(call, context.request_id),
            )
        # The caller gets its answer first; the settlement and log row follow at once.
        result = calls.complete(context, body["messages"], record_later=True, **arguments)
    except (CallRefused, CallFailed) as exc:
        if isinstance(exc, TooLong):
            exc.details["param"] = max_tokens_param
        return refusal_response(exc, context)
    response = json_response(
        result.completion.raw or _completion_body(result, context.request_id),
        {
            "X-Request-Id": context.request_id,
            "X-Model-Used": result.model.model_id,
            "X-Cost-USD": format(result.cost, "f"),
        },
    )
    response.after = result.record
    return response


def _completion_body(result: calls.CallResult, request_id: str) -> dict[str, Any]:
    completion = result.completion
    message: dict[str, Any] = {"role": "assistant", "content": completion.content}
    if completion.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in completion.tool_calls
        ]
    return {
        "id": completion.response_id or f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": result.model.model_id,
        "choices": [{"index": 0, "message": message, "finish_reason": completion.finish_reason}],
        "usage": _usage_body(result),
    }


def _usage_body(result: calls.CallResult) -> dict[str, Any]:
    usage = result.completion.usage
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "cost": result.cost,
    }


def _chunk_body(chunk: StreamChunk, model: str, request_id: str) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if chunk.content:
        delta["content"] = chunk.content
    if chunk.tool_call_deltas:
        delta["tool_calls"] = chunk.tool_call_deltas
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": chunk.finish_reason}],
    }


def _sse_events(call: calls.StreamingCall, request_id: str) -> Generator[bytes]:
    saw_usage = False
    try:
        for item in call:
            if isinstance(item, calls.CallResult):
                if not saw_usage:
                    final = {
                        **_chunk_body(StreamChunk(), item.model.model_id, request_id),
                        "choices": [],
                        "usage": _usage_body(item),
                    }
                    yield f"data: {dumps_exact(final)}\n\n".encode()
                break
            raw = item.raw or _chunk_body(item, call.decision.model.model_id, request_id)
            saw_usage = saw_usage or bool(raw.get("usage"))
            yield f"data: {dumps_exact(raw)}\n\n".encode()
    except CallFailed as exc:
        error = {"error": {"message": str(exc), "type": "upstream_error", "code": exc.status}}
        yield f"data: {json.dumps(error)}\n\n".encode()
    except Exception as exc:
        # The call is recorded now, with this error; the client still gets an ending.
        log.exception("the stream of call %s failed", request_id)
        call.close(f"The gateway's stream failed: {type(exc).__name__}: {exc}")
        yield stream_error_event()
    finally:
        # Closing this (a client went away) closes the call now, in this thread, so it
        # settles and logs; left to the garbage collector, that could wait forever.
        call.events.close()
    yield b"data: [DONE]\n\n"


def stream_error_event() -> bytes:
    """The event that ends a stream the gateway could not finish."""
    error = {"message": "The gateway failed; the error is in its log.", "type": "server_error"}
    return f"data: {json.dumps({'error': {**error, 'code': 'server_error'}})}\n\n".encode()


def models(request: GatewayRequest) -> GatewayResponse:
    if _service_key(request) is None:
        return error_response(
            401, "invalid_api_key", "A valid service API key is required (Bearer)."
        )
    if not toggle_enabled("gateway.enabled", default=True):
        return error_response(
            503, "feature_off", "The gateway is switched off (toggle gateway.enabled)."
        )
    rows = AIModel.objects.filter(active=True, provider__enabled=True).select_related("provider")
    return json_response(
        {
            "object": "list",
            "data": [
                {
                    "id": model.model_id,
                    "object": "model",
                    "created": int(model.updated_at.timestamp()),
                    "owned_by": model.provider.name,
                }
                for model in rows
            ],
        }
    )
