"""What `/v1/messages` accepts: a request in Anthropic's Messages API shape, checked
and turned into the chat call every other AI call is (`routing.calls`), so it is
routed, approved, budgeted, priced and logged as chat is.

The check and the translation are one walk over the request: each field is checked
as it is translated, and the first one at fault is refused with a 400 naming it
(`InvalidRequest.param`, as `messages[1].content[0].source.media_type`) before
anything is reserved. Unlike the chat endpoint, fields the gateway cannot honour are
refused rather than passed on (`thinking`, server tools, document blocks), as
Anthropic refuses fields it does not know: a call never silently loses what it asked.

The chat messages keep what Anthropic's blocks say: `system` becomes a system
message, `tool_use` blocks tool calls, `tool_result` blocks tool messages, image
blocks image parts (a data URL for base64), and `cache_control` markers stay on
their text parts (as OpenRouter takes them), for the Anthropic provider to restore.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

from controlplane.money import dumps_exact
from routing.gateway_requests import InvalidRequest
from routing.models import OperationLog

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}
# Preferences about Anthropic's own capacity and accounts (where and how fast it runs,
# its diagnostics): they change nothing in the answer, and have no meaning elsewhere.
IGNORED_FIELDS = frozenset(
    {"service_tier", "inference_geo", "speed", "diagnostics", "user_profile_id", "workspace_id"}
)
# `thinking` values that ask for no thinking budget of their own ("adaptive": the
# model decides, which the gateway leaves to it).
THINKING_WITHOUT_BUDGET = frozenset({"disabled", "adaptive"})
_MODEL_LENGTH = cast(int, OperationLog._meta.get_field("model_requested").max_length)


@dataclass
class MessagesCall:
    """A `/v1/messages` request as the chat call it makes."""

    model: str
    max_tokens: int
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    stream: bool = False
    # The chat call's other fields (temperature, tool_choice, stop, user...).
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def stop_sequences(self) -> list[str]:
        return list(self.extra.get("stop") or [])


def messages_call(body: dict[str, Any]) -> MessagesCall:
    """Raises `InvalidRequest` naming the first field at fault."""
    _refuse_unknown(body)
    call = MessagesCall(
        model=_model(body),
        max_tokens=_count(body, "max_tokens", required=True, least=1),
        messages=_system(body.get("system")) + _conversation(body.get("messages")),
        tools=_tools(body.get("tools")),
        stream=_flag(body, "stream"),
    )
    extra = call.extra
    for name, high in (("temperature", 1), ("top_p", 1)):
        if body.get(name) is not None:
            extra[name] = _number(body[name], name, 0, high)
    if body.get("top_k") is not None:
        extra["top_k"] = _count(body, "top_k", least=0)
    if body.get("stop_sequences") is not None:
        extra["stop"] = _strings(body["stop_sequences"], "stop_sequences")
    if body.get("metadata") is not None:
        metadata = _object(body["metadata"], "metadata")
        user = metadata.get("user_id")
        if user is not None:
            extra["user"] = _text(user, "metadata.user_id")
    if body.get("tool_choice") is not None:
        extra.update(_tool_choice(body["tool_choice"], call.tools))
    if body.get("cache_control") is not None:
        _mark_last_text(call.messages, _cached(body, {}, "")["cache_control"])
    return call


def _mark_last_text(messages: list[dict[str, Any]], marker: dict[str, Any]) -> None:
    """Anthropic's top-level `cache_control`: the marker goes on the last text of the
    request, where the Anthropic provider (or OpenRouter) finds it on its block."""
    for message in reversed(messages):
        content = message.get("content")
        if isinstance(content, str) and content:
            message["content"] = [{"type": "text", "text": content, "cache_control": marker}]
            return
        for part in reversed(content if isinstance(content, list) else []):
            if part.get("type") == "text":
                part["cache_control"] = marker
                return


def _refuse_unknown(body: dict[str, Any]) -> None:
    thinking = body.get("thinking")
    if thinking is not None and not (
        isinstance(thinking, dict) and thinking.get("type") in THINKING_WITHOUT_BUDGET
    ):
        raise InvalidRequest(
            "'thinking' (extended thinking) is not supported by the gateway.", param="thinking"
        )
    known = {
        "model", "max_tokens", "messages", "system", "tools", "tool_choice", "stream",
        "temperature", "top_p", "top_k", "stop_sequences", "metadata", "thinking",
        "cache_control",
    }  # fmt: skip
    for name in body:
        if name not in known and name not in IGNORED_FIELDS:
            raise InvalidRequest(f"'{name}' is not supported by the gateway.", param=name)


def _model(body: dict[str, Any]) -> str:
    model = _text(body.get("model"), "model")
    if not model:
        raise InvalidRequest("'model' is required.", param="model")
    if len(model) > _MODEL_LENGTH:
        raise InvalidRequest(f"'model' is longer than {_MODEL_LENGTH} characters.", param="model")
    return model


# -- the conversation ------------------------------------------------------------------


def _system(system: Any) -> list[dict[str, Any]]:
    if system is None or system == "":
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    blocks = _list(system, "system")
    parts = [
        _text_part(_block(block, f"system[{i}]"), f"system[{i}]") for i, block in enumerate(blocks)
    ]
    return [{"role": "system", "content": parts}] if parts else []


def _conversation(messages: Any) -> list[dict[str, Any]]:
    if messages is None:
        raise InvalidRequest("'messages' is required.", param="messages")
    turns = _list(messages, "messages")
    if not turns:
        raise InvalidRequest("'messages' must hold at least one message.", param="messages")
    chat: list[dict[str, Any]] = []
    for index, turn in enumerate(turns):
        where = f"messages[{index}]"
        turn = _object(turn, where)
        role = turn.get("role")
        if role == "user":
            chat += _user_turn(turn.get("content"), f"{where}.content")
        elif role == "assistant":
            chat.append(_assistant_turn(turn.get("content"), f"{where}.content"))
        else:
            raise InvalidRequest(
                f"'{where}.role' must be 'user' or 'assistant'.", param=f"{where}.role"
            )
    return chat


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if content is None:
        raise InvalidRequest(f"'{where}' is required.", param=where)
    return [_block(block, f"{where}[{i}]") for i, block in enumerate(_list(content, where))]


def _user_turn(content: Any, where: str) -> list[dict[str, Any]]:
    """Tool results first (each a tool message, as chat has them), then the rest of
    the turn as one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for index, block in enumerate(_blocks(content, where)):
        at = f"{where}[{index}]"
        kind = block["type"]
        if kind == "tool_result":
            message, images = _tool_result(block, at)
            results.append(message)
            parts += images
        elif kind in ("text", "image"):
            parts.append(_text_part(block, at) if kind == "text" else _image_part(block, at))
        else:
            raise _unsupported(kind, at)
    return results + ([{"role": "user", "content": parts}] if parts else [])


def _assistant_turn(content: Any, where: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for index, block in enumerate(_blocks(content, where)):
        at = f"{where}[{index}]"
        if block["type"] == "text":
            parts.append(_text_part(block, at))
        elif block["type"] == "tool_use":
            calls.append(_tool_call(block, at))
        else:
            raise _unsupported(block["type"], at)
    message: dict[str, Any] = {"role": "assistant", "content": _plain(parts)}
    if calls:
        message["tool_calls"] = calls
    return message


def _plain(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]] | None:
    """Text parts as one string when no marker needs the parts kept apart."""
    if not parts:
        return None
    if any("cache_control" in part for part in parts):
        return parts
    return "".join(part["text"] for part in parts)


def _block(block: Any, where: str) -> dict[str, Any]:
    block = _object(block, where)
    if not isinstance(block.get("type"), str):
        raise InvalidRequest(f"'{where}.type' must be a string.", param=f"{where}.type")
    return block


def _text_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    if block["type"] != "text":
        raise InvalidRequest(f"'{where}.type' must be 'text'.", param=f"{where}.type")
    part: dict[str, Any] = {"type": "text", "text": _text(block.get("text"), f"{where}.text")}
    return _cached(block, part, where)


def _cached(block: dict[str, Any], part: dict[str, Any], where: str) -> dict[str, Any]:
    marker = block.get("cache_control")
    if marker is not None:
        at = f"{where}.cache_control" if where else "cache_control"
        marker = _object(marker, at)
        if marker.get("type") != "ephemeral":
            raise InvalidRequest(f"'{at}.type' must be 'ephemeral'.", param=f"{at}.type")
        part["cache_control"] = marker
    return part


def _image_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = _object(block.get("source"), f"{where}.source")
    kind = source.get("type")
    if kind == "base64":
        media_type = source.get("media_type")
        if media_type not in IMAGE_TYPES:
            raise InvalidRequest(
                f"'{where}.source.media_type' must be one of {', '.join(sorted(IMAGE_TYPES))}.",
                param=f"{where}.source.media_type",
            )
        data = _text(source.get("data"), f"{where}.source.data")
        url = f"data:{media_type};base64,{data}"
    elif kind == "url":
        url = _text(source.get("url"), f"{where}.source.url")
    else:
        raise InvalidRequest(
            f"'{where}.source.type' must be 'base64' or 'url'.", param=f"{where}.source.type"
        )
    return _cached(block, {"type": "image_url", "image_url": {"url": url}}, where)


def _tool_call(block: dict[str, Any], where: str) -> dict[str, Any]:
    arguments = _object(block.get("input"), f"{where}.input")
    return {
        "id": _text(block.get("id"), f"{where}.id"),
        "type": "function",
        "function": {
            "name": _text(block.get("name"), f"{where}.name"),
            "arguments": dumps_exact(arguments),
        },
    }


def _tool_result(block: dict[str, Any], where: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The tool message, and the images of the result (chat's tool messages carry text
    only: they go in the user message after it)."""
    message: dict[str, Any] = {
        "role": "tool",
        "tool_call_id": _text(block.get("tool_use_id"), f"{where}.tool_use_id"),
    }
    if block.get("is_error") is not None:
        _flag(block, "is_error", where=f"{where}.is_error")
    content = block.get("content")
    if content is None or isinstance(content, str):
        message["content"] = content or ""
        return message, []
    texts, images = [], []
    for index, part in enumerate(_blocks(content, f"{where}.content")):
        at = f"{where}.content[{index}]"
        if part["type"] == "text":
            texts.append(_text_part(part, at))
        elif part["type"] == "image":
            images.append(_image_part(part, at))
        else:
            raise _unsupported(part["type"], at)
    message["content"] = _plain(texts) or ""
    return message, images


def _unsupported(kind: str, where: str) -> InvalidRequest:
    return InvalidRequest(
        f"'{where}.type' is '{kind}', a block the gateway does not support here.",
        param=f"{where}.type",
    )


# -- tools -----------------------------------------------------------------------------


def _tools(tools: Any) -> list[dict[str, Any]] | None:
    if tools is None:
        return None
    described = []
    for index, tool in enumerate(_list(tools, "tools")):
        where = f"tools[{index}]"
        tool = _object(tool, where)
        if tool.get("type", "custom") not in ("custom", None):
            raise InvalidRequest(
                f"'{where}.type' is '{tool.get('type')}': server tools are not supported by "
                "the gateway (only tools with an input_schema).",
                param=f"{where}.type",
            )
        name = _text(tool.get("name"), f"{where}.name")
        if not name:
            raise InvalidRequest(f"'{where}.name' must not be empty.", param=f"{where}.name")
        function: dict[str, Any] = {
            "name": name,
            "parameters": _object(tool.get("input_schema"), f"{where}.input_schema"),
        }
        if tool.get("description") is not None:
            function["description"] = _text(tool["description"], f"{where}.description")
        described.append(_cached(tool, {"type": "function", "function": function}, where))
    return described or None


def _tool_choice(choice: Any, tools: list[dict[str, Any]] | None) -> dict[str, Any]:
    choice = _object(choice, "tool_choice")
    kind = choice.get("type")
    extra: dict[str, Any] = {}
    if kind in TOOL_CHOICES:
        extra["tool_choice"] = TOOL_CHOICES[kind]
    elif kind == "tool":
        name = _text(choice.get("name"), "tool_choice.name")
        if name not in {tool["function"]["name"] for tool in tools or []}:
            raise InvalidRequest(
                f"'tool_choice.name' names '{name}', which is not one of 'tools'.",
                param="tool_choice.name",
            )
        extra["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        raise InvalidRequest(
            "'tool_choice.type' must be 'auto', 'any', 'tool' or 'none'.", param="tool_choice.type"
        )
    if _flag(choice, "disable_parallel_tool_use", where="tool_choice.disable_parallel_tool_use"):
        extra["parallel_tool_calls"] = False
    return extra


# -- values ----------------------------------------------------------------------------


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest(f"'{where}' must be an object.", param=where)
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidRequest(f"'{where}' must be an array.", param=where)
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"'{where}' must be a string.", param=where)
    return value


def _strings(value: Any, where: str) -> list[str]:
    return [_text(item, f"{where}[{i}]") for i, item in enumerate(_list(value, where))]


def _flag(body: dict[str, Any], name: str, *, where: str | None = None) -> bool:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise InvalidRequest(f"'{where or name}' must be true or false.", param=where or name)
    return bool(value)


def _count(body: dict[str, Any], name: str, *, least: int, required: bool = False) -> int:
    value = body.get(name)
    if value is None and required:
        raise InvalidRequest(f"'{name}' is required.", param=name)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InvalidRequest(f"'{name}' must be an integer of at least {least}.", param=name)
    return value


def _number(value: Any, name: str, low: int, high: int) -> int | float | Decimal:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float | Decimal)
        or not low <= value <= high
    ):
        raise InvalidRequest(f"'{name}' must be a number from {low} to {high}.", param=name)
    return value
