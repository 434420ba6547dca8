"""The OpenAI-compatible client speaking the Responses API upstream
(`POST {base_url}/responses`), for routes whose setting asks for it (`Route.api`).

Some models (OpenAI's newest, its reasoning ones) are best or only served by the
Responses API. The call path, the gateway and the chat agent loop still speak chat
completions: this client translates a `ChatRequest` into a Responses request (chat
messages as input items, flat function tools, `max_output_tokens`; `store` false, as
nothing upstream should keep the conversation) and the answer back into the same
`Completion` and `StreamChunk`s a chat-completions server gives, so budgets, events
and stop reasons are the same whichever API the route speaks. Failures are classified
as `OpenAICompatibleProvider` classifies them (its table), a `response.failed` or
`error` event as an error event in a 200.

`raw` is left empty on what this returns: the gateway then writes the chat shapes
itself, rather than passing a Responses body through to a chat caller.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from routing.providers.base import ChatRequest, Completion, StreamChunk, ToolCall, Usage
from routing.providers.openai_compat import OpenAICompatibleProvider
from routing.providers.upstream_http import json_body, sse_data

# The chat fields that mean the same in a Responses request, passed on as they are.
PASSED_ON = ("temperature", "top_p", "parallel_tool_calls", "user", "service_tier")
# Why a Responses answer was cut short, as chat says it.
FINISH_REASONS = {"max_output_tokens": "length", "content_filter": "content_filter"}


class OpenAIResponsesProvider(OpenAICompatibleProvider):
    def __init__(self, base_url: str, api_key: str = "", **options: Any) -> None:
        super().__init__(base_url, api_key, **options)
        self.url = f"{self.base_url}/responses"

    def __repr__(self) -> str:
        return f"<OpenAIResponsesProvider {self.label} {self.base_url}>"

    def complete(self, request: ChatRequest) -> Completion:
        try:
            response = self._client.post(self.url, content=json_body(responses_body(request)))
            response.read()
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        if response.status_code >= 400:
            raise self._status_error(response)
        return self._completion_of(self._parse(response.content))

    def stream(self, request: ChatRequest) -> Iterator[StreamChunk | Completion]:
        try:
            with self._client.stream(
                "POST",
                self.url,
                content=json_body(responses_body(request, stream=True)),
                headers={"Accept": "text/event-stream"},
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._status_error(response)
                yield from self._read_response_events(response)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None

    def _read_response_events(self, response: httpx.Response) -> Iterator[StreamChunk | Completion]:
        tool_index: dict[str, int] = {}  # a function call item's id -> its chat index
        text: list[str] = []
        final: Completion | None = None
        for data in sse_data(response.iter_lines()):
            # Read on past the last event to the end of the body, so the connection goes
            # back to the pool instead of being closed.
            if data == "[DONE]" or final is not None:
                continue
            event = self._parse(data)
            if not isinstance(event, dict):
                raise self._error(f"unexpected stream event {data[:80]!r}", code="invalid_response")
            kind = event.get("type")
            if kind == "response.output_text.delta" and event.get("delta"):
                text.append(str(event["delta"]))
                yield StreamChunk(content=str(event["delta"]))
            elif kind == "response.output_item.added" and _is_call(event.get("item")):
                item = event["item"]
                index = tool_index.setdefault(
                    str(item.get("id") or len(tool_index)), len(tool_index)
                )
                delta = {
                    "index": index,
                    "id": item.get("call_id") or "",
                    "type": "function",
                    "function": {"name": item.get("name") or "", "arguments": ""},
                }
                yield StreamChunk(tool_call_deltas=[delta])
            elif kind == "response.function_call_arguments.delta" and event.get("delta"):
                index = tool_index.get(str(event.get("item_id")), max(len(tool_index) - 1, 0))
                delta = {"index": index, "function": {"arguments": str(event["delta"])}}
                yield StreamChunk(tool_call_deltas=[delta])
            elif kind in ("response.completed", "response.incomplete", "response.failed"):
                final = self._completion_of(event.get("response"), streamed_text=text)
            elif kind == "error":
                raise self._error_event(event)
        if final is None:
            raise self._error(
                "the stream ended before the answer was complete", code="connection_lost"
            )
        yield StreamChunk(finish_reason=final.finish_reason)
        yield final

    def _completion_of(self, body: Any, *, streamed_text: list[str] | None = None) -> Completion:
        if not isinstance(body, dict):
            raise self._error("the response is not a JSON object", code="invalid_response")
        if body.get("error") or body.get("status") == "failed":
            raise self._error_event(body.get("error") or {"message": "the response failed"})
        content: list[str] = []
        tool_calls: list[ToolCall] = []
        for item in body.get("output") or []:
            if not isinstance(item, dict):
                continue
            if item.get("type") == "message":
                content += [
                    str(part.get("text") or "")
                    for part in item.get("content") or []
                    if isinstance(part, dict) and part.get("type") == "output_text"
                ]
            elif _is_call(item):
                tool_calls.append(
                    ToolCall(
                        id=str(item.get("call_id") or f"call_{len(tool_calls)}"),
                        name=str(item.get("name") or ""),
                        arguments=str(item.get("arguments") or ""),
                    )
                )
        text = "".join(content)
        if not text and streamed_text:
            text = "".join(streamed_text)  # a server whose last event leaves out the output
        reason = (body.get("incomplete_details") or {}).get("reason")
        if tool_calls:
            finish_reason = "tool_calls"
        elif body.get("status") == "incomplete":
            finish_reason = FINISH_REASONS.get(str(reason), "length")
        else:
            finish_reason = "stop"
        return Completion(
            content=text,
            tool_calls=tool_calls,
            finish_reason=finish_reason,
            usage=usage_of(body.get("usage")),
            model=str(body.get("model") or ""),
            response_id=str(body.get("id") or ""),
        )


def _is_call(item: Any) -> bool:
    return isinstance(item, dict) and item.get("type") == "function_call"


def usage_of(usage: Any) -> Usage:
    """A Responses `usage` read as chat's (its counts under their chat names)."""
    if not isinstance(usage, dict):
        return Usage.from_openai(usage)
    input_details = usage.get("input_tokens_details")
    output_details = usage.get("output_tokens_details")
    input_details = input_details if isinstance(input_details, dict) else {}
    output_details = output_details if isinstance(output_details, dict) else {}
    return Usage.from_openai(
        {
            "prompt_tokens": usage.get("input_tokens"),
            "completion_tokens": usage.get("output_tokens"),
            "prompt_tokens_details": {
                "cached_tokens": input_details.get("cached_tokens"),
                "cache_write_tokens": input_details.get("cache_write_tokens"),
            },
            "completion_tokens_details": {
                "reasoning_tokens": output_details.get("reasoning_tokens")
            },
            "cost": usage.get("cost"),
        }
    )


# -- the request ------------------------------------------------------------------------


def responses_body(request: ChatRequest, *, stream: bool = False) -> dict[str, Any]:
    extra = request.extra
    body: dict[str, Any] = {
        "model": request.model,
        "input": input_items(request.messages),
        "store": False,
    }
    body.update({name: extra[name] for name in PASSED_ON if extra.get(name) is not None})
    if request.tools:
        body["tools"] = [_flat_tool(tool) for tool in request.tools]
    if request.max_tokens is not None:
        body["max_output_tokens"] = request.max_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    choice = extra.get("tool_choice")
    if isinstance(choice, dict):
        body["tool_choice"] = {
            "type": "function",
            "name": (choice.get("function") or {}).get("name"),
        }
    elif choice is not None:
        body["tool_choice"] = choice
    answer_format = extra.get("response_format")
    if isinstance(answer_format, dict) and answer_format.get("type") == "json_schema":
        body["text"] = {
            "format": {"type": "json_schema", **(answer_format.get("json_schema") or {})}
        }
    elif isinstance(answer_format, dict):
        body["text"] = {"format": answer_format}
    if extra.get("reasoning_effort") is not None:
        body["reasoning"] = {"effort": extra["reasoning_effort"]}
    if stream:
        body["stream"] = True
    return body


def input_items(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages as Responses input items: a tool call is an item of its own, its
    result a `function_call_output`."""
    items: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role == "tool":
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": message.get("tool_call_id") or "",
                    "output": _text_of(message.get("content")),
                }
            )
            continue
        content = message.get("content")
        if role == "assistant":
            if content:
                items.append({"role": "assistant", "content": _text_of(content)})
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                items.append(
                    {
                        "type": "function_call",
                        "call_id": call.get("id") or "",
                        "name": function.get("name") or "",
                        "arguments": function.get("arguments") or "",
                    }
                )
            continue
        items.append({"role": role or "user", "content": _input_content(content)})
    return items


def _input_content(content: Any) -> str | list[dict[str, Any]]:
    if not isinstance(content, list):
        return _text_of(content)
    parts: list[dict[str, Any]] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "image_url":
            image = part.get("image_url") or {}
            url = image.get("url") if isinstance(image, dict) else image
            detail = image.get("detail") if isinstance(image, dict) else None
            parts.append({"type": "input_image", "image_url": url, "detail": detail or "auto"})
        else:
            parts.append({"type": "input_text", "text": str(part.get("text") or "")})
    return parts


def _text_of(content: Any) -> str:
    if isinstance(content, list):
        return "".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
    return str(content or "")


def _flat_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function") or {}
    flat = {"type": "function", "name": function.get("name") or ""}
    flat.update(
        {
            name: function[name]
            for name in ("description", "parameters", "strict")
            if function.get(name) is not None
        }
    )
    return flat
