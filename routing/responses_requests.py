"""What `POST /v1/responses` accepts, and the chat call it becomes.

OpenAI's Responses API (what its Agents SDK speaks by default) is the same call as a
chat completion in another dialect: `instructions` and `input` items instead of
`messages`, flat function tools, `max_output_tokens`, `text.format`. The gateway
checks the request against a JSON Schema before anything is reserved (a 400 naming
the field, OpenAI's `param`, as `gateway_requests` does for chat; the schema and its
fast check are `responses_schema`), then translates it
into the chat call every provider, budget and log row already understands
(`ResponsesCall`); `responses_answers` translates the answer back.

The gateway keeps no state between calls, so what needs a stored response cannot be
honoured: `previous_response_id`, `conversation`, `background` and `item_reference`
inputs are refused with a 400 that says to send the whole input instead. `store` is
accepted and nothing is stored (the response's `store` says false).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jsonschema.exceptions import best_match

from routing.gateway_requests import InvalidRequest, invalid_field, parse_json_object
from routing.responses_schema import VALIDATOR, conforms

# What only a server that keeps responses can honour, and what to do instead.
STATEFUL_FIELDS = {
    "previous_response_id": "the gateway keeps no responses; send the whole conversation "
    "as `input` (the earlier items and this turn's) instead",
    "conversation": "the gateway keeps no conversations; send the whole conversation as "
    "`input` instead",
    "prompt": "the gateway keeps no prompt templates; send `instructions` and `input` instead",
}
# Chat-completions fields that mean the same in a Responses request: passed on as sent.
PASSED_ON = ("temperature", "top_p", "parallel_tool_calls", "user")


@dataclass
class ResponsesCall:
    """A Responses request as the chat call it becomes, and what its answer repeats."""

    request: dict[str, Any]  # the checked body, for what the response echoes
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    max_tokens: int | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def streamed(self) -> bool:
        return bool(self.request.get("stream"))

    @property
    def model_requested(self) -> str:
        return str(self.request.get("model") or "")


def parse_responses_request(body: bytes) -> ResponsesCall:
    """The request, checked and translated; raises `InvalidRequest` naming the field."""
    request = parse_json_object(body)
    for name, instead in STATEFUL_FIELDS.items():
        if request.get(name) not in (None, ""):
            raise InvalidRequest(f"'{name}' is not supported: {instead}.", param=name)
    if request.get("background"):
        raise InvalidRequest(
            "'background' is not supported: the gateway keeps no responses to poll; "
            "stream the response instead.",
            param="background",
        )
    if not conforms(request):
        # The schema is the authority, and names the field at fault.
        error = best_match(VALIDATOR.iter_errors(request))
        if error is not None:
            raise invalid_field(error)
    return ResponsesCall(
        request=request,
        messages=_messages(request),
        tools=[_chat_tool(tool) for tool in request["tools"]] if request.get("tools") else None,
        max_tokens=request.get("max_output_tokens"),
        extra=_extra(request),
    )


def _messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if request.get("instructions"):
        messages.append({"role": "system", "content": request["instructions"]})
    items = request["input"]
    if isinstance(items, str):
        return [*messages, {"role": "user", "content": items}]
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            messages.append({"role": item["role"], "content": _chat_content(item["content"])})
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            last = messages[-1] if messages else None
            # Calls made in one turn are one assistant message with all its calls.
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item["output"]
            if not isinstance(output, str):
                output = "".join(part["text"] for part in output)
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": output})
        # A reasoning item is the model's own note from an earlier turn: a chat model
        # takes none back, so it is left out.
    return messages


def _chat_content(content: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Text as one string (what every chat server takes); with an image, chat parts."""
    if isinstance(content, str):
        return content
    if all(part["type"] != "input_image" for part in content):
        return "".join(part.get("text", part.get("refusal", "")) for part in content)
    parts: list[dict[str, Any]] = []
    for part in content:
        if part["type"] == "input_image":
            image = {"url": part["image_url"]}
            if part.get("detail"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            parts.append({"type": "text", "text": part.get("text", part.get("refusal", ""))})
    return parts


def _chat_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = {
        name: tool[name]
        for name in ("name", "description", "parameters", "strict")
        if tool.get(name) is not None
    }
    return {"type": "function", "function": function}


def _extra(request: dict[str, Any]) -> dict[str, Any]:
    extra = {name: request[name] for name in PASSED_ON if request.get(name) is not None}
    choice = request.get("tool_choice")
    if isinstance(choice, dict):
        extra["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    elif choice is not None:
        extra["tool_choice"] = choice
    answer_format = (request.get("text") or {}).get("format") or {"type": "text"}
    if answer_format["type"] == "json_object":
        extra["response_format"] = {"type": "json_object"}
    elif answer_format["type"] == "json_schema":
        schema = {
            name: answer_format[name]
            for name in ("name", "schema", "description", "strict")
            if answer_format.get(name) is not None
        }
        extra["response_format"] = {"type": "json_schema", "json_schema": schema}
    effort = (request.get("reasoning") or {}).get("effort")
    if effort is not None:
        extra["reasoning_effort"] = effort
    return extra
