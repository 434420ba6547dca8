"""The provider that needs no network: the offline model of the embedded default.

It answers in the same OpenAI shapes as a real provider (every StreamChunk and the
non-streamed Completion carry an OpenAI-style `raw` dict), so the gateway and the
agent loop cannot tell it apart except by `label`. An answer is a `Reply` or a
`CallTool`, played as a completion (`complete_answer`) or a stream (`stream_answer`);
the tests' scripted providers play theirs the same way (tests/scripted_providers.py).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from django.conf import settings

from controlplane.money import ZERO, to_decimal
from routing.providers import transcription
from routing.providers.base import (
    ChatRequest,
    Completion,
    ProviderError,
    StreamChunk,
    ToolCall,
    Usage,
)
from routing.providers.embeddings import EmbeddingRequest, offline_embeddings
from routing.providers.speech import SpeechRequest, SpokenAudio, offline_speech

WORD_PIECE = re.compile(r"\S{1,8}\s*|\s+")
EXCERPT_CHARS = 160


class OfflineProvider:
    """A deterministic model: the same messages always get the same answer, for free.

    - When the last message is a tool result, it answers with that result.
    - Otherwise, when the last user message names one of the request's tools, it
      calls that tool (the one named first), with arguments that fill the tool
      schema's required properties.
    - Otherwise it answers the last user message in a sentence.
    Usage counts words; the reported cost is zero. Embeddings and speech: see
    `routing.providers.embeddings` and `.speech`.
    """

    label = "offline"

    def __init__(
        self, token_delay: float | None = None, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        # Seconds between streamed pieces, a readable pace for demos; None reads
        # settings.OFFLINE_TOKEN_DELAY_SECONDS at each call. `sleep` waits them (a fake
        # clock's in tests).
        self.token_delay = token_delay
        self.sleep = sleep

    def complete(self, request: ChatRequest) -> Completion:
        return complete_answer(_offline_turn(request), request)

    def stream(self, request: ChatRequest) -> Iterator[StreamChunk | Completion]:
        delay = self.token_delay
        if delay is None:
            delay = float(getattr(settings, "OFFLINE_TOKEN_DELAY_SECONDS", 0.0))
        return stream_answer(_offline_turn(request), request, token_delay=delay, sleep=self.sleep)

    def transcribe(self, request: transcription.TranscriptionRequest) -> transcription.Transcript:
        return transcription.offline_transcript(request)

    def embed(self, request: EmbeddingRequest) -> Completion:
        return offline_embeddings(request)

    def speak(self, request: SpeechRequest) -> SpokenAudio:
        return offline_speech(request)

    def __repr__(self) -> str:
        return "<OfflineProvider>"


# -- answers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """A text answer. `usage` defaults to word counts with no reported cost; `cost`
    sets the provider-reported cost. `error_after` is for a scripted provider: it fails
    the stream after the text (and a non-streamed call, before answering)."""

    text: str
    usage: Usage | None = None
    cost: Decimal | str | None = None
    error_after: ProviderError | None = None


@dataclass(frozen=True)
class CallTool:
    """A tool call answer (finish_reason "tool_calls")."""

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str = ""
    usage: Usage | None = None
    cost: Decimal | str | None = None


# -- the offline model's answer ---------------------------------------------------------

Answer = Reply | CallTool


def _offline_turn(request: ChatRequest) -> Answer:
    return replace(_offline_answer(request), cost=ZERO)


def _offline_answer(request: ChatRequest) -> Answer:
    messages = request.messages
    digest = _digest(messages)
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        name = _tool_name_of_result(messages, last.get("tool_call_id"))
        result = _excerpt(_text_of(last))
        return Reply(f"The {name or 'tool'} tool returned: {result}")
    user_text = next((_text_of(m) for m in reversed(messages) if m.get("role") == "user"), "")
    tool = _tool_named_in(user_text, request.tools or [])
    if tool is not None:
        function = tool.get("function") or {}
        name = function.get("name", "")
        arguments = _arguments_for(function.get("parameters") or {}, _text_without(user_text, name))
        return CallTool(name, arguments, id=f"call_{digest[:24]}")
    if not user_text.strip():
        return Reply("Offline model: there is no question to answer yet.")
    return Reply(
        f'Offline model (ref {digest[:8]}): you said "{_excerpt(user_text)}". This answer '
        "comes from the built-in offline model, which needs no network or key; route the "
        "operation to a real provider for real answers."
    )


def _tool_named_in(text: str, tools: list[dict[str, Any]]) -> dict[str, Any] | None:
    found: list[tuple[int, int, dict[str, Any]]] = []
    for order, tool in enumerate(tools):
        name = (tool.get("function") or {}).get("name") or ""
        match = name and re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text, re.IGNORECASE)
        if match:
            found.append((match.start(), order, tool))
    return min(found, key=lambda item: item[:2])[2] if found else None


def _tool_name_of_result(messages: list[dict[str, Any]], call_id: Any) -> str:
    for message in reversed(messages):
        for call in message.get("tool_calls") or []:
            if call.get("id") == call_id:
                return (call.get("function") or {}).get("name") or ""
    return ""


def _arguments_for(schema: dict[str, Any], user_text: str) -> dict[str, Any]:
    """Arguments that validate against a tool's `parameters` schema: every required
    property filled with a default for its type (the user's words for the first
    free-text string)."""
    value = _value_for(schema, {"text": user_text.strip()})
    return value if isinstance(value, dict) else {}


def _value_for(schema: dict[str, Any], context: dict[str, str]) -> Any:
    for key in ("const", "default"):
        if key in schema:
            return schema[key]
    if schema.get("enum"):
        return schema["enum"][0]
    if schema.get("examples"):
        return schema["examples"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return _value_for(schema[key][0], context)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = schema.get("properties") or {}
        return {
            name: _value_for(properties.get(name) or {}, context)
            for name in schema.get("required") or []
        }
    if kind == "array":
        return [_value_for(schema.get("items") or {}, context)] * int(schema.get("minItems", 0))
    if kind in ("integer", "number"):
        return _number_for(schema, integer=kind == "integer")
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return _string_for(schema, context)


def _number_for(schema: dict[str, Any], *, integer: bool) -> int | float:
    low = schema.get("minimum")
    if low is None and schema.get("exclusiveMinimum") is not None:
        low = schema["exclusiveMinimum"] + (1 if integer else 0.5)
    high = schema.get("maximum")
    value = low if low is not None else (min(0, high) if high is not None else 0)
    return int(value) if integer else value


def _string_for(schema: dict[str, Any], context: dict[str, str]) -> str:
    formats = {
        "date": "2025-01-01",
        "date-time": "2025-01-01T00:00:00Z",
        "time": "00:00:00Z",
        "email": "someone@example.com",
        "uri": "https://example.com/",
        "uuid": "00000000-0000-0000-0000-000000000000",
    }
    if schema.get("format") in formats:
        return formats[schema["format"]]
    # The user's words go to the first free-text string (a query, a question).
    text = context.pop("text", "") or "example"
    low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
    text = text.ljust(low, ".")
    return text[: int(high)] if high is not None else text


# -- shaping answers the OpenAI way ---------------------------------------------------


def complete_answer(turn: Answer, request: ChatRequest) -> Completion:
    completion = _completion(turn, request)
    message: dict[str, Any] = {"role": "assistant", "content": completion.content or None}
    if completion.tool_calls:
        message["tool_calls"] = [_tool_call_json(call) for call in completion.tool_calls]
    completion.raw = {
        "id": completion.response_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": completion.model,
        "choices": [{"index": 0, "message": message, "finish_reason": completion.finish_reason}],
        "usage": _usage_json(completion.usage),
    }
    return completion


def stream_answer(
    turn: Answer,
    request: ChatRequest,
    *,
    token_delay: float = 0.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[StreamChunk | Completion]:
    completion = _completion(turn, request)
    created = int(time.time())

    def event(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "id": completion.response_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": completion.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }

    yield StreamChunk(raw=event({"role": "assistant", "content": ""}))
    for piece in WORD_PIECE.findall(completion.content):
        if token_delay:
            sleep(token_delay)
        yield StreamChunk(content=piece, raw=event({"content": piece}))
    for index, call in enumerate(completion.tool_calls):
        delta = {"index": index, **_tool_call_json(call)}
        yield StreamChunk(tool_call_deltas=[delta], raw=event({"tool_calls": [delta]}))
    yield StreamChunk(
        finish_reason=completion.finish_reason, raw=event({}, completion.finish_reason)
    )
    usage_event = {**event({}), "choices": [], "usage": _usage_json(completion.usage)}
    yield StreamChunk(raw=usage_event)
    yield completion


def _completion(turn: Answer, request: ChatRequest) -> Completion:
    digest = _digest(request.messages)
    if isinstance(turn, CallTool):
        arguments = (
            turn.arguments if isinstance(turn.arguments, str) else json.dumps(turn.arguments)
        )
        call = ToolCall(id=turn.id or f"call_{digest[:24]}", name=turn.name, arguments=arguments)
        content, tool_calls, finish_reason = "", [call], "tool_calls"
        completion_tokens = _count_words(f"{turn.name} {arguments}")
    else:
        content, tool_calls, finish_reason = turn.text, [], "stop"
        completion_tokens = _count_words(turn.text)
    usage = (
        replace(turn.usage)
        if turn.usage
        else Usage(
            prompt_tokens=sum(_count_words(_text_of(m)) for m in request.messages),
            completion_tokens=completion_tokens,
        )
    )
    if turn.cost is not None:
        usage = replace(usage, reported_cost=to_decimal(turn.cost))
    return Completion(
        content=content,
        tool_calls=tool_calls,
        finish_reason=finish_reason,
        usage=usage,
        model=request.model,
        response_id=f"chatcmpl-{digest[:24]}",
    )


def _tool_call_json(call: ToolCall) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


def _usage_json(usage: Usage) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }
    if usage.reported_cost is not None:
        cost = usage.reported_cost
        body["cost"] = cost if cost.is_finite() else str(cost)  # JSON has no NaN
    return body


def _digest(messages: list[dict[str, Any]]) -> str:
    canonical = json.dumps(messages, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _text_of(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):  # content parts
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content or "")


def _text_without(text: str, name: str) -> str:
    words = re.sub(re.escape(name), " ", text, flags=re.IGNORECASE).split()
    return " ".join(words).strip(" .,:;!?")


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "…"


def _count_words(text: str) -> int:
    return len(text.split())
