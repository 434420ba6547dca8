"""OpenAI chat, as the rest of the product speaks it, in Anthropic's Messages API and
back: what the Anthropic provider (`routing.providers.anthropic`) sends and reads.

A `ChatRequest` becomes a Messages request: system and developer messages become its
`system` blocks, tool results become `tool_result` blocks of a user turn, tool calls
`tool_use` blocks, image parts image blocks, and `cache_control` markers on text parts
(as `/v1/messages` keeps them, and as OpenRouter takes them) go back on their blocks,
so prompt caching works through the gateway. Fields Anthropic has no counterpart for
(`n`, penalties, `logprobs`...) are left out: it refuses fields it does not know.

An answer comes back as the OpenAI shapes OpenRouter gives for an Anthropic model:
a `Completion` whose `raw` is a `chat.completion` body, `StreamChunk`s whose `raw` are
`chat.completion.chunk` events, the finish chunk naming Anthropic's own stop reason
(`native_finish_reason`, as OpenRouter does) and the stop sequence met (`stop_reason`,
as vLLM does), so `/v1/messages` can give them back. Usage follows OpenAI's
convention: cache reads and writes are part of the prompt tokens, and are priced at
the catalog's cache prices.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from routing.providers.base import ChatRequest, Completion, StreamChunk, ToolCall, Usage

# Anthropic requires `max_tokens`; a chat call may leave it out.
DEFAULT_MAX_TOKENS = 4096
# Request fields with the same meaning in both APIs.
_SAME_FIELDS = ("temperature", "top_p", "top_k")
_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_DATA_URL = re.compile(r"data:(?P<media_type>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)", re.DOTALL)


class UnsupportedContent(ValueError):
    """A part of the request Anthropic cannot take (audio, a file part)."""


# -- the request ------------------------------------------------------------------------


def request_body(request: ChatRequest, *, stream: bool) -> dict[str, Any]:
    system, messages = _turns(request.messages)
    extra = request.extra
    body: dict[str, Any] = {
        "model": request.model,
        "messages": messages,
        "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
    }
    if system:
        body["system"] = system
    for name in _SAME_FIELDS:
        if extra.get(name) is not None:
            body[name] = extra[name]
    if request.temperature is not None:
        body["temperature"] = request.temperature
    stop = extra.get("stop")
    if stop:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if extra.get("user"):
        body["metadata"] = {"user_id": str(extra["user"])}
    if request.tools:
        body["tools"] = [_tool(tool) for tool in request.tools]
    choice = _tool_choice(extra.get("tool_choice"), extra.get("parallel_tool_calls"))
    if choice is not None and (request.tools or choice["type"] == "none"):
        body["tool_choice"] = choice
    if stream:
        body["stream"] = True
    return body


def _turns(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The system blocks and the alternating user and assistant turns (consecutive
    messages of one role are one turn: tool results and the text after them)."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            system += _text_blocks(message.get("content"))
            continue
        if role == "assistant":
            blocks = _text_blocks(message.get("content"))
            blocks += [_tool_use(call) for call in message.get("tool_calls") or []]
            role = "assistant"
        elif role == "tool":
            blocks = [_tool_result(message)]
            role = "user"
        elif role == "function":  # the legacy tool result: no id to tie it to a call
            blocks = [{"type": "text", "text": f"{message.get('name')}: {message.get('content')}"}]
            role = "user"
        else:
            blocks = _content_blocks(message.get("content"))
            role = "user"
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += blocks
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def _text_blocks(content: Any) -> list[dict[str, Any]]:
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [
        _text_block(part) for part in content if part.get("type") == "text" and part.get("text")
    ]


def _text_block(part: dict[str, Any]) -> dict[str, Any]:
    block = {"type": "text", "text": part["text"]}
    if part.get("cache_control"):
        block["cache_control"] = part["cache_control"]
    return block


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return _text_blocks(content)
    blocks = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                blocks.append(_text_block(part))
        elif kind == "image_url":
            blocks.append(_image_block(part))
        else:
            raise UnsupportedContent(f"a '{kind}' content part (Anthropic takes text and images)")
    return blocks


def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url", "") if isinstance(image, dict) else str(image or "")
    inline = _DATA_URL.fullmatch(url)
    if inline is not None:
        source = {"type": "base64", **inline.groupdict()}
    else:
        source = {"type": "url", "url": url}
    block: dict[str, Any] = {"type": "image", "source": source}
    if part.get("cache_control"):
        block["cache_control"] = part["cache_control"]
    return block


def _tool_use(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    return {
        "type": "tool_use",
        "id": call.get("id") or "",
        "name": function.get("name") or "",
        "input": tool_input(function.get("arguments")),
    }


def tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's arguments as Anthropic's `input` object. Arguments that are not
    a JSON object (a model's broken JSON) are kept whole, under `arguments`."""
    if isinstance(arguments, dict):
        return arguments
    if not arguments:
        return {}
    try:
        parsed = json.loads(arguments, parse_float=Decimal)
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"arguments": arguments}


def _tool_result(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.get("tool_call_id")}
    block["content"] = _text_blocks(content) if isinstance(content, list) else (content or "")
    return block


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function") or {}
    described: dict[str, Any] = {
        "name": function.get("name"),
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        described["description"] = function["description"]
    if tool.get("cache_control"):
        described["cache_control"] = tool["cache_control"]
    return described


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    named: dict[str, Any] | None
    if isinstance(choice, dict):
        named = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    else:
        kinds = {"auto": "auto", "required": "any", "none": "none"}
        named = {"type": kinds[choice]} if choice in kinds else None
    if parallel is False:
        named = named or {"type": "auto"}
        if named["type"] != "none":
            named["disable_parallel_tool_use"] = True
    return named


# -- the answer -------------------------------------------------------------------------


def usage_of(reported: Any) -> Usage:
    """Anthropic's usage in OpenAI's convention (cache reads and writes in the prompt)."""
    if not isinstance(reported, dict):
        return Usage(unreadable={"usage": repr(reported)[:100]} if reported else {})
    unreadable: dict[str, str] = {}

    def count(name: str) -> int:
        value = reported.get(name)
        if value is None:
            return 0
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        unreadable[name] = repr(value)[:100]
        return 0

    fresh, read, written = (
        count("input_tokens"),
        count("cache_read_input_tokens"),
        count("cache_creation_input_tokens"),
    )
    return Usage(
        prompt_tokens=fresh + read + written,
        completion_tokens=count("output_tokens"),
        cached_tokens=read,
        cache_write_tokens=written,
        unreadable=unreadable,
    )


def openai_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
    }


def finish_reason(stop_reason: Any) -> str | None:
    if stop_reason is None:
        return None
    return _FINISH_REASONS.get(str(stop_reason), "stop")


def completion_of(message: dict[str, Any]) -> Completion:
    """A whole Messages API answer as a Completion, its `raw` the OpenAI body."""
    texts, calls = [], []
    for block in message.get("content") or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text") or ""))
        elif block.get("type") == "tool_use":
            arguments = json.dumps(block.get("input") or {}, default=str)
            calls.append(ToolCall(str(block.get("id") or ""), str(block.get("name")), arguments))
    completion = Completion(
        content="".join(texts),
        tool_calls=calls,
        finish_reason=finish_reason(message.get("stop_reason")) or "stop",
        usage=usage_of(message.get("usage")),
        model=str(message.get("model") or ""),
        response_id=str(message.get("id") or ""),
    )
    reply: dict[str, Any] = {"role": "assistant", "content": completion.content or None}
    if calls:
        reply["tool_calls"] = [_openai_call(call) for call in calls]
    completion.raw = {
        "id": completion.response_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": completion.model,
        "choices": [
            {
                "index": 0,
                "message": reply,
                **_finish_fields(message.get("stop_reason"), message.get("stop_sequence")),
            }
        ],
        "usage": openai_usage(completion.usage),
    }
    return completion


def _openai_call(call: ToolCall) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


def _finish_fields(stop_reason: Any, stop_sequence: Any) -> dict[str, Any]:
    return {
        "finish_reason": finish_reason(stop_reason) or "stop",
        "native_finish_reason": stop_reason,
        "stop_reason": stop_sequence,
    }


class StreamedMessage:
    """Anthropic's stream events, read one by one into OpenAI stream chunks and, at
    `message_stop`, the whole Completion."""

    def __init__(self) -> None:
        self.id = ""
        self.model = ""
        self.usage: dict[str, Any] = {}
        self.text: list[str] = []
        self.calls: dict[int, ToolCall] = {}  # by block index
        self.stop_reason: Any = None
        self.stop_sequence: Any = None
        self.stopped = False
        self.created = int(time.time())

    def add(self, event: dict[str, Any]) -> Iterator[StreamChunk]:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.id, self.model = str(message.get("id") or ""), str(message.get("model") or "")
            self.usage.update(message.get("usage") or {})
            yield self._chunk({"role": "assistant", "content": ""})
        elif kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                call = ToolCall(str(block.get("id") or ""), str(block.get("name") or ""), "")
                self.calls[int(event.get("index") or 0)] = call
                delta = {**_openai_call(call), "index": len(self.calls) - 1}
                yield self._chunk({"tool_calls": [delta]})
            elif block.get("type") == "text" and block.get("text"):
                yield from self._text(str(block["text"]))
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                yield from self._text(str(delta.get("text") or ""))
            elif delta.get("type") == "input_json_delta":
                index = int(event.get("index") or 0)
                started = self.calls.get(index)
                if started is not None:
                    piece = str(delta.get("partial_json") or "")
                    started.arguments += piece
                    position = list(self.calls).index(index)
                    tool_delta = {"index": position, "function": {"arguments": piece}}
                    yield self._chunk({"tool_calls": [tool_delta]})
        elif kind == "message_delta":
            delta = event.get("delta") or {}
            self.stop_reason = delta.get("stop_reason", self.stop_reason)
            self.stop_sequence = delta.get("stop_sequence", self.stop_sequence)
            # Counts on message_delta are totals so far: they replace, not add.
            self.usage.update(
                {k: v for k, v in (event.get("usage") or {}).items() if v is not None}
            )
        elif kind == "message_stop":
            self.stopped = True
            yield self._chunk({}, _finish_fields(self.stop_reason, self.stop_sequence))
            usage = openai_usage(usage_of(self.usage))
            yield StreamChunk(raw={**self._event([]), "usage": usage})

    def _text(self, text: str) -> Iterator[StreamChunk]:
        if text:
            self.text.append(text)
            yield self._chunk({"content": text})

    def _event(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }

    def _chunk(self, delta: dict[str, Any], finish: dict[str, Any] | None = None) -> StreamChunk:
        finish = finish or {"finish_reason": None}
        return StreamChunk(
            content=delta.get("content") or "",
            tool_call_deltas=list(delta.get("tool_calls") or []),
            finish_reason=finish["finish_reason"],
            raw=self._event([{"index": 0, "delta": delta, **finish}]),
        )

    def completion(self) -> Completion:
        return Completion(
            content="".join(self.text),
            tool_calls=list(self.calls.values()),
            finish_reason=finish_reason(self.stop_reason) or "stop",
            usage=usage_of(self.usage),
            model=self.model,
            response_id=self.id,
        )
