"""`POST /v1/messages`: Anthropic's Messages API in front of the same call path as
chat, so a service written against the `anthropic` package routes through the gateway
by changing only its base URL.

The service key comes as Anthropic's `x-api-key` header or as `Authorization:
Bearer`; operations, modes, approvals, kill switches and budgets are chat's
(`routing.gateway.open_call`, `routing.calls`). The request is checked and translated
by `routing.messages_api`; the answer (any provider's, in chat's shapes) comes back
as an Anthropic Message, or streamed as Anthropic's server-sent events, in the order
and shapes the `anthropic` package reads them. Errors are Anthropic's
(`{"type": "error", "error": {"type", "message"}}`), with the gateway's own fields
(`code`, `approval_id`, `budget`...) beside them and the same statuses as chat.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any

from controlplane.money import dumps_built, dumps_exact
from routing import calls
from routing.call_refusals import CallFailed, CallRefused, TooLong
from routing.gateway import (
    GatewayRequest,
    GatewayResponse,
    KeyRefused,
    bearer,
    json_response,
    open_call,
)
from routing.gateway_requests import InvalidRequest, parse_json_object
from routing.messages_api import MessagesCall, messages_call
from routing.providers.anthropic_format import tool_input
from routing.providers.base import Completion, StreamChunk, Usage

log = logging.getLogger(__name__)

# Anthropic's error type for each status the gateway answers with.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
NATIVE_STOP_REASONS = frozenset(
    {"end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"}
)


def error_response(
    status: int, code: str | None, message: str, *, error_type: str | None = None, **details: Any
) -> GatewayResponse:
    """An Anthropic-style error; `code` and the details are the gateway's, beside it.
    (`error_type`, OpenAI's kind, has no place here: the status names the type.)"""
    error = {"type": ERROR_TYPES.get(status, "api_error"), "message": message, "code": code}
    body = {"type": "error", "error": {**error, **details}}
    return json_response(body, status=status)


def stream_failure() -> bytes:
    """The event that ends a stream the gateway could not finish."""
    return _event(
        "error", _error_event("api_error", "The gateway failed; the error is in its log.")
    )


def messages(request: GatewayRequest) -> GatewayResponse:
    try:
        context = open_call(request, request.header("x-api-key") or bearer(request))
        call = messages_call(parse_json_object(request.body))
    except KeyRefused:
        return error_response(
            401,
            "invalid_api_key",
            "A valid service API key is required (x-api-key, or Authorization: Bearer).",
        )
    except InvalidRequest as exc:
        return error_response(400, exc.code or "invalid_request", str(exc), param=exc.param)
    arguments: dict[str, Any] = {
        "tools": call.tools,
        "max_tokens": call.max_tokens,
        "extra": call.extra,
        "model_requested": call.model,
    }
    headers = {"X-Request-Id": context.request_id, "request-id": context.request_id}
    try:
        if call.stream:
            streaming = calls.stream(context, call.messages, **arguments)
            return GatewayResponse(
                200,
                {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **headers},
                stream=_events(streaming, call, context.request_id),
            )
        result = calls.complete(context, call.messages, record_later=True, **arguments)
    except CallRefused as exc:
        return _refusal(exc, context.request_id)
    except CallFailed as exc:
        return error_response(502, "upstream_error", str(exc), request_id=context.request_id)
    body = message_body(result.completion, result.model.model_id, call, context.request_id)
    response = json_response(
        body,
        {
            **headers,
            "X-Model-Used": result.model.model_id,
            "X-Cost-USD": format(result.cost, "f"),
        },
        write=dumps_built,
    )
    response.after = result.record
    return response


def _refusal(exc: CallRefused, request_id: str) -> GatewayResponse:
    if isinstance(exc, TooLong):
        exc.details["param"] = "max_tokens"
    refusal = error_response(exc.status, exc.code, str(exc), request_id=request_id, **exc.details)
    if exc.details.get("retry_after") is not None:
        refusal.headers["Retry-After"] = str(exc.details["retry_after"])
    return refusal


# -- the answer -------------------------------------------------------------------------


def message_body(
    completion: Completion, model: str, call: MessagesCall, request_id: str
) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if completion.content:
        content.append({"type": "text", "text": completion.content})
    content += [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": tool_input(c.arguments)}
        for c in completion.tool_calls
    ]
    choice = ((completion.raw or {}).get("choices") or [{}])[0]
    stop_reason, stop_sequence = _stop(completion.finish_reason, choice, call)
    return {
        "id": f"msg_{request_id}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage_body(completion.usage),
    }


def _stop(finish_reason: str | None, choice: Any, call: MessagesCall) -> tuple[str, str | None]:
    """Anthropic's stop reason and the stop sequence met. An Anthropic model's own
    reason comes through the chat answer (`native_finish_reason`, as OpenRouter and
    the Anthropic provider put it, with the sequence in vLLM's `stop_reason`)."""
    native = choice.get("native_finish_reason") if isinstance(choice, dict) else None
    met = choice.get("stop_reason") if isinstance(choice, dict) else None
    if native in NATIVE_STOP_REASONS:
        reason = str(native)
    else:
        reason = STOP_REASONS.get(finish_reason or "stop", "end_turn")
        if finish_reason == "content_filter":
            reason = "refusal"
    if isinstance(met, str) and met in call.stop_sequences:
        return "stop_sequence", met
    if reason == "stop_sequence" and len(call.stop_sequences) == 1:
        return reason, call.stop_sequences[0]
    return (reason if reason != "stop_sequence" else "end_turn"), None


def usage_body(usage: Usage) -> dict[str, int]:
    """Anthropic counts cache reads and writes apart from `input_tokens`; chat counts
    them in the prompt."""
    return {
        "input_tokens": max(
            usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens, 0
        ),
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
    }


# -- the stream -------------------------------------------------------------------------


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {dumps_built(data)}\n\n".encode()


def _error_event(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


class _Blocks:
    """The content blocks of a streamed answer, opened and closed as chat's chunks
    arrive: text, then each tool call (its arguments as `input_json_delta`s)."""

    def __init__(self) -> None:
        self.count = 0
        self.open: int | None = None
        self.open_kind = ""
        self.tools: dict[int, int] = {}  # chat's tool index -> block index
        self.pending: dict[int, dict[str, Any]] = {}  # a tool call not yet named

    def _start(self, kind: str, block: dict[str, Any]) -> Generator[bytes]:
        yield from self.close()
        self.open, self.open_kind = self.count, kind
        self.count += 1
        yield _event(
            "content_block_start",
            {"type": "content_block_start", "index": self.open, "content_block": block},
        )

    def close(self) -> Generator[bytes]:
        if self.open is not None:
            yield _event("content_block_stop", {"type": "content_block_stop", "index": self.open})
            self.open = None

    def text(self, text: str) -> Generator[bytes]:
        if self.open_kind != "text" or self.open is None:
            yield from self._start("text", {"type": "text", "text": ""})
        delta = {"type": "text_delta", "text": text}
        yield _event(
            "content_block_delta",
            {"type": "content_block_delta", "index": self.open, "delta": delta},
        )

    def tool(self, delta: dict[str, Any]) -> Generator[bytes]:
        index = delta.get("index")
        position = (
            int(index)
            if isinstance(index, int)
            else max(self.tools, default=-1) + (1 if delta.get("id") else 0)
        )
        function = delta.get("function")
        function = function if isinstance(function, dict) else {}
        if position not in self.tools:
            pending = self.pending.setdefault(position, {"id": "", "name": "", "arguments": ""})
            pending["id"] = pending["id"] or str(delta.get("id") or "")
            pending["name"] += str(function.get("name") or "")
            pending["arguments"] += _text_of(function.get("arguments"))
            if not pending["name"]:
                return
            del self.pending[position]
            block = {
                "type": "tool_use",
                "id": pending["id"] or f"toolu_{position}",
                "name": pending["name"],
                "input": {},
            }
            yield from self._start("tool_use", block)
            self.tools[position] = self.count - 1
            arguments = pending["arguments"]
        else:
            arguments = _text_of(function.get("arguments"))
        if arguments:
            partial = {"type": "input_json_delta", "partial_json": arguments}
            event = {"type": "content_block_delta", "index": self.tools[position], "delta": partial}
            yield _event("content_block_delta", event)


def _text_of(arguments: Any) -> str:
    """A piece of a tool call's arguments as text (some servers send an object)."""
    if arguments is None or isinstance(arguments, str):
        return arguments or ""
    return dumps_exact(arguments)


def _events(
    streaming: calls.StreamingCall, call: MessagesCall, request_id: str
) -> Generator[bytes]:
    model = streaming.decision.model.model_id
    start: dict[str, Any] = {
        "id": f"msg_{request_id}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        # Known once the answer is: an estimate until message_delta gives the count.
        "usage": {"input_tokens": streaming.decision.prompt_tokens, "output_tokens": 0},
    }
    yield _event("message_start", {"type": "message_start", "message": start})
    yield _event("ping", {"type": "ping"})
    blocks = _Blocks()
    native: dict[str, Any] = {}
    try:
        for item in streaming:
            if isinstance(item, calls.CallResult):
                yield from blocks.close()
                reason, sequence = _stop(item.completion.finish_reason, native, call)
                delta = {"stop_reason": reason, "stop_sequence": sequence}
                usage = usage_body(item.completion.usage)
                yield _event(
                    "message_delta", {"type": "message_delta", "delta": delta, "usage": usage}
                )
                yield _event("message_stop", {"type": "message_stop"})
                return
            yield from _chunk_events(item, blocks)
            native = _native_finish(item) or native
    except CallFailed as exc:
        yield _event("error", _error_event("api_error", str(exc)))
    except Exception as exc:
        log.exception("the stream of call %s failed", request_id)
        streaming.close(f"The gateway's stream failed: {type(exc).__name__}: {exc}")
        yield stream_failure()
    finally:
        # Closing this (a client went away) closes the call now, so it settles and logs.
        streaming.events.close()


def _chunk_events(chunk: StreamChunk, blocks: _Blocks) -> Generator[bytes]:
    if chunk.content:
        yield from blocks.text(chunk.content)
    for delta in chunk.tool_call_deltas:
        if isinstance(delta, dict):
            yield from blocks.tool(delta)


def _native_finish(chunk: StreamChunk) -> dict[str, Any]:
    choices = (chunk.raw or {}).get("choices") or []
    choice = choices[0] if choices and isinstance(choices[0], dict) else {}
    return choice if choice.get("native_finish_reason") else {}
