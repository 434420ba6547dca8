"""A chat answer as OpenAI's Responses API gives it: a `Response` object, or (streamed)
its server-sent events, in the shapes the `openai` package parses.

A whole answer is one `Response` (`response_body`): a `message` output item with an
`output_text` part when the model wrote text, a `function_call` item (with its
`call_id`) per tool call, and usage in the Responses names. A stream
(`ResponseEvents`) opens the response (`response.created`, `response.in_progress`),
opens an output item when its first piece arrives, sends the pieces as deltas, closes
each item (its `.done` events) when the next one starts or the answer ends, and ends
with `response.completed` (or `response.incomplete` when the answer was cut short,
`response.failed` when the provider failed), each event numbered by
`sequence_number`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from controlplane.money import dumps_built
from routing import calls
from routing.providers.base import Completion, StreamChunk
from routing.responses_requests import ResponsesCall

# Why a chat answer stopped, as the Responses API says it when it is cut short.
INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}


def response_id(request_id: str) -> str:
    return f"resp_{request_id}"


def response_body(
    call: ResponsesCall,
    request_id: str,
    *,
    model: str,
    status: str = "completed",
    output: list[dict[str, Any]] | None = None,
    result: calls.CallResult | None = None,
    error: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The `Response` object: in progress (no result yet), or the finished answer."""
    request = call.request
    incomplete = None
    if result is not None:
        output = output if output is not None else output_items(result.completion, request_id)
        reason = INCOMPLETE_REASONS.get(result.completion.finish_reason or "")
        if reason is not None:
            status, incomplete = "incomplete", {"reason": reason}
    answer_format = (request.get("text") or {}).get("format") or {"type": "text"}
    return {
        "id": response_id(request_id),
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": model,
        "output": output or [],
        "error": error,
        "incomplete_details": incomplete,
        "instructions": request.get("instructions"),
        "metadata": request.get("metadata") or {},
        "max_output_tokens": request.get("max_output_tokens"),
        "parallel_tool_calls": request.get("parallel_tool_calls", True) is not False,
        "previous_response_id": None,
        "store": False,  # the gateway keeps no responses
        "temperature": request.get("temperature"),
        "top_p": request.get("top_p"),
        "text": {"format": answer_format},
        "tool_choice": request.get("tool_choice") or "auto",
        "tools": request.get("tools") or [],
        "user": request.get("user"),
        "usage": usage_body(result) if result is not None else None,
    }


def usage_body(result: calls.CallResult) -> dict[str, Any]:
    usage = result.completion.usage
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "cost": result.cost,  # as the chat answers say it: exact, in USD
    }


def output_items(completion: Completion, request_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if completion.content:
        items.append(_message_item(request_id, completion.content, "completed"))
    items += [
        _function_call_item(request_id, index, call.id, call.name, call.arguments, "completed")
        for index, call in enumerate(completion.tool_calls)
    ]
    return items


def _message_item(request_id: str, text: str | None, status: str) -> dict[str, Any]:
    content = [] if text is None else [_text_part(text)]
    return {
        "id": f"msg_{request_id}",
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": content,
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _function_call_item(
    request_id: str, index: int, call_id: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    return {
        "id": f"fc_{request_id}_{index}",
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


@dataclass
class _OpenItem:
    """An output item being streamed: its place, and what it holds so far."""

    output_index: int
    item: dict[str, Any]
    pieces: list[str] = field(default_factory=list)
    tool_index: int | None = None  # the chat tool call it streams, for a function call


class ResponseEvents:
    """The Responses stream of one streamed chat call, as server-sent event bytes."""

    def __init__(self, call: ResponsesCall, request_id: str, model: str) -> None:
        self.call = call
        self.request_id = request_id
        self.model = model
        self.sequence = 0
        self.done: list[dict[str, Any]] = []  # finished output items, in order
        self.open: _OpenItem | None = None
        self.tool_items: dict[int, int] = {}  # chat tool call index -> output index

    def event(self, kind: str, **fields: Any) -> bytes:
        body = {"type": kind, **fields, "sequence_number": self.sequence}
        self.sequence += 1
        return f"event: {kind}\ndata: {dumps_built(body)}\n\n".encode()

    def start(self) -> Iterator[bytes]:
        opened = response_body(self.call, self.request_id, model=self.model, status="in_progress")
        yield self.event("response.created", response=opened)
        yield self.event("response.in_progress", response=opened)

    def add(self, chunk: StreamChunk) -> Iterator[bytes]:
        if chunk.content:
            if self.open is None or self.open.item["type"] != "message":
                yield from self._close()
                yield from self._open(_message_item(self.request_id, None, "in_progress"))
                assert self.open is not None
                yield self.event(
                    "response.content_part.added",
                    item_id=self.open.item["id"],
                    output_index=self.open.output_index,
                    content_index=0,
                    part=_text_part(""),
                )
            assert self.open is not None
            self.open.pieces.append(chunk.content)
            yield self.event(
                "response.output_text.delta",
                item_id=self.open.item["id"],
                output_index=self.open.output_index,
                content_index=0,
                delta=chunk.content,
                logprobs=[],
            )
        for delta in chunk.tool_call_deltas:
            yield from self._add_tool_delta(delta)

    def _add_tool_delta(self, delta: dict[str, Any]) -> Iterator[bytes]:
        index = delta.get("index")
        if not isinstance(index, int):
            # Some servers leave out `index`: a new id starts a new call.
            index = self.open.tool_index if self.open and not delta.get("id") else None
            index = index if index is not None else len(self.tool_items)
        function = delta.get("function") or {}
        if index not in self.tool_items:
            yield from self._close()
            item = _function_call_item(
                self.request_id,
                index,
                str(delta.get("id") or f"call_{self.request_id}_{index}"),
                str(function.get("name") or ""),
                "",
                "in_progress",
            )
            yield from self._open(item, tool_index=index)
        if self.open is None or self.open.tool_index != index:
            return  # a late piece of a call already closed: the final answer holds it
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            self.open.pieces.append(arguments)
            yield self.event(
                "response.function_call_arguments.delta",
                item_id=self.open.item["id"],
                output_index=self.open.output_index,
                delta=arguments,
            )

    def finish(self, result: calls.CallResult) -> Iterator[bytes]:
        """Close what is open with the final answer's own text and calls (the provider's
        complete account), send what never streamed, then the finished response."""
        completion = result.completion
        first_text = not any(item["type"] == "message" for item in self.done)
        if self.open is not None and self.open.item["type"] == "message" and first_text:
            self.open.pieces = [completion.content]
        yield from self._close(completion)
        streamed_text = any(item["type"] == "message" for item in self.done)
        if completion.content and not streamed_text:
            yield from self.add(StreamChunk(content=completion.content))
            yield from self._close(completion)
        for index, tool_call in enumerate(completion.tool_calls):
            if index not in self.tool_items:
                delta = {"index": index, "id": tool_call.id, "function": {"name": tool_call.name}}
                yield from self._add_tool_delta(delta)
                yield from self._close(completion)
        body = response_body(
            self.call, self.request_id, model=result.model.model_id, output=self.done, result=result
        )
        kind = "response.completed" if body["status"] == "completed" else "response.incomplete"
        yield self.event(kind, response=body)

    def fail(self, code: str, message: str) -> Iterator[bytes]:
        yield from self._close()
        error = {"code": code, "message": message}
        body = response_body(
            self.call,
            self.request_id,
            model=self.model,
            status="failed",
            output=self.done,
            error=error,
        )
        yield self.event("response.failed", response=body)

    def _open(self, item: dict[str, Any], tool_index: int | None = None) -> Iterator[bytes]:
        output_index = len(self.done)
        self.open = _OpenItem(output_index, item, tool_index=tool_index)
        if tool_index is not None:
            self.tool_items[tool_index] = output_index
        yield self.event("response.output_item.added", output_index=output_index, item=item)

    def _close(self, completion: Completion | None = None) -> Iterator[bytes]:
        opened, self.open = self.open, None
        if opened is None:
            return
        item, where = opened.item, {"item_id": opened.item["id"]}
        where["output_index"] = opened.output_index
        if item["type"] == "message":
            text = "".join(opened.pieces)
            yield self.event(
                "response.output_text.done", **where, content_index=0, text=text, logprobs=[]
            )
            yield self.event(
                "response.content_part.done", **where, content_index=0, part=_text_part(text)
            )
            item = {**item, "content": [_text_part(text)]}
        else:
            item = {**item, "arguments": "".join(opened.pieces)}
            calls_made = completion.tool_calls if completion is not None else []
            if opened.tool_index is not None and opened.tool_index < len(calls_made):
                final = calls_made[opened.tool_index]
                item.update(call_id=final.id, name=final.name, arguments=final.arguments)
            yield self.event(
                "response.function_call_arguments.done",
                **where,
                name=item["name"],
                arguments=item["arguments"],
            )
        item["status"] = "completed"
        self.done.append(item)
        yield self.event("response.output_item.done", output_index=opened.output_index, item=item)
