"""The OpenAI-compatible gateway: other services send their AI calls through here.

`POST /v1/chat/completions` and `GET /v1/models`, authenticated by service API keys
(`Authorization: Bearer cpk_...`). Each call is an operation (the key's default, or
the `X-Operation` header) and goes through `routing.calls`: kill switches (503),
approvals (403 with the approval id to wait on; retry with `X-Approval-Id`), budgets
(429 naming the budget), routes with fallbacks, exact cost in the log. Streams are
passed through as the provider sent them.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Generator
from datetime import timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from controlplane.models import toggle_enabled
from routing import calls
from routing.models import AIModel, ServiceKey
from routing.money import dumps_exact, loads_exact
from routing.providers.base import StreamChunk

HANDLED_FIELDS = {"model", "messages", "tools", "max_tokens", "stream", "stream_options"}


def _error(status: int, code: str, message: str, **details: Any) -> HttpResponse:
    body = {"error": {"message": message, "type": code, "code": code, **details}}
    return HttpResponse(dumps_exact(body), status=status, content_type="application/json")


def _json(body: Any, headers: dict[str, str] | None = None) -> HttpResponse:
    response = HttpResponse(dumps_exact(body), content_type="application/json")
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _service_key(request: HttpRequest) -> ServiceKey | None:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return None
    key = ServiceKey.authenticate(header.removeprefix("Bearer ").strip())
    if key is not None:
        # A cheap, conditional write: last use to the minute is enough. The row was
        # just read, so a key used within the minute needs no write at all.
        stale = timezone.now() - timedelta(minutes=1)
        if key.last_used_at is None or key.last_used_at <= stale:
            ServiceKey._base_manager.filter(pk=key.pk).exclude(last_used_at__gt=stale).update(
                last_used_at=timezone.now()
            )
    return key


class BadRequest(Exception):
    pass


def _parse(request: HttpRequest) -> dict[str, Any]:
    try:
        body = loads_exact(request.body or b"")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"The body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list.")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(f"messages[{index}] must be an object with a 'role'.")
    max_tokens = body.get("max_tokens")
    # bool is an int in Python, not in JSON: `true` is no token count.
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise BadRequest("'max_tokens' must be a positive integer.")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise BadRequest("'tools' must be a list.")
    # null means the default (false), as in OpenAI's API.
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        raise BadRequest("'stream' must be true or false.")
    return body


def _context(request: HttpRequest, key: ServiceKey) -> calls.CallContext:
    approval = request.headers.get("X-Approval-Id", "").strip()
    if approval and not approval.isdigit():
        raise BadRequest("X-Approval-Id must be an approval number.")
    return calls.CallContext(
        operation=request.headers.get("X-Operation", "").strip() or key.default_operation,
        mode=request.headers.get("X-Mode", "").strip() or None,
        service=key.service,
        approval_id=int(approval) if approval else None,
        via_gateway=True,
    )


@csrf_exempt
@require_POST
def chat_completions(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    key = _service_key(request)
    if key is None:
        return _error(401, "invalid_api_key", "A valid service API key is required (Bearer).")
    try:
        body = _parse(request)
        context = _context(request, key)
    except BadRequest as exc:
        return _error(400, "invalid_request_error", str(exc))
    arguments: dict[str, Any] = {
        "tools": body.get("tools"),
        "max_tokens": body.get("max_tokens"),
        "extra": {k: v for k, v in body.items() if k not in HANDLED_FIELDS},
        "model_requested": str(body.get("model") or ""),
    }
    try:
        if body.get("stream"):
            call = calls.stream(context, body["messages"], **arguments)
            response = StreamingHttpResponse(
                _sse(call, context.request_id), content_type="text/event-stream"
            )
            response["Cache-Control"] = "no-cache"
            response["X-Request-Id"] = context.request_id
            return response
        result = calls.complete(context, body["messages"], **arguments)
    except calls.CallRefused as exc:
        refusal = _error(
            exc.status, exc.code, str(exc), request_id=context.request_id, **exc.details
        )
        if exc.details.get("retry_after") is not None:
            # Clients (the openai package among them) read the wait from the header.
            refusal["Retry-After"] = str(exc.details["retry_after"])
        return refusal
    except calls.CallFailed as exc:
        return _error(502, "upstream_error", str(exc), request_id=context.request_id)
    return _json(
        result.completion.raw or _completion_body(result, context.request_id),
        {
            "X-Request-Id": context.request_id,
            "X-Model-Used": result.model.model_id,
            "X-Cost-USD": format(result.cost, "f"),
        },
    )


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
    except calls.CallFailed as exc:
        error = {"error": {"message": str(exc), "type": "upstream_error", "code": exc.status}}
        yield f"data: {json.dumps(error)}\n\n".encode()
    finally:
        # Closing this (a client went away) closes the call now, in this thread, so it
        # settles and logs; left to the garbage collector, that could wait forever.
        call.events.close()
    yield b"data: [DONE]\n\n"


async def _sse(call: calls.StreamingCall, request_id: str) -> AsyncIterator[bytes]:
    """Serve the (synchronous) call as an async stream, so daphne sends each event
    as it comes instead of buffering the whole answer."""
    events = _sse_events(call, request_id)

    def step() -> bytes | None:
        return next(events, None)

    try:
        while True:
            chunk = await sync_to_async(step)()
            if chunk is None:
                return
            yield chunk
    finally:
        # A client that went away: close the call so it settles and logs.
        await sync_to_async(events.close)()


@require_GET
def models(request: HttpRequest) -> HttpResponse:
    if _service_key(request) is None:
        return _error(401, "invalid_api_key", "A valid service API key is required (Bearer).")
    if not toggle_enabled("gateway.enabled", default=True):
        return _error(503, "feature_off", "The gateway is switched off (toggle gateway.enabled).")
    rows = AIModel.objects.filter(active=True, provider__enabled=True).select_related("provider")
    return _json(
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
