"""What the gateway accepts: a chat-completions request checked against OpenAI's shape
before anything is reserved, so a malformed one is refused with a 400 naming the
field (OpenAI's `param`) instead of failing deeper in a provider, pricing or the
ledger.

The body is parsed with money's exact numbers (as `loads_exact`), without JavaScript's
`NaN` and `Infinity`, then walked once, without recursion, for what JSON allows but
nothing after it can store or traverse: nesting deeper than `MAX_DEPTH` and NUL
characters (PostgreSQL's text and jsonb refuse them). The shape is a JSON Schema
compiled once (`jsonschema`); fields it does not name pass through to the provider
as sent, as OpenAI-compatible servers do.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from routing.models import OperationLog
from routing.models.routes import OPERATION_NAME, operation_name

# Deeper than any real request (a tool's parameter schema nests a few levels), and far
# below what the validators and serializers after the parser can recurse through.
MAX_DEPTH = 64
# Header values the call's log row keeps, at most as long as its columns.
HEADER_LIMITS = {
    "X-Operation": OperationLog._meta.get_field("operation").max_length,
    "X-Mode": OperationLog._meta.get_field("mode").max_length,
}
MAX_APPROVAL_DIGITS = 18  # a bigint
_APPROVAL_ID = re.compile(r"[0-9]{1,%d}" % MAX_APPROVAL_DIGITS)  # noqa: UP031
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InvalidRequest(Exception):
    """A request the gateway refuses with 400 `invalid_request_error`; `param` names
    the field at fault, as OpenAI's errors do."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


_TOKEN_COUNT = {"type": ["integer", "null"], "minimum": 1}
_TEXT_PART = {
    "type": "object",
    "required": ["type"],
    "properties": {"type": {"type": "string"}, "text": {"type": "string"}},
}
CHAT_REQUEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["messages"],
    "properties": {
        "model": {
            "type": ["string", "null"],
            "maxLength": OperationLog._meta.get_field("model_requested").max_length,
        },
        "messages": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/message"}},
        "tools": {"type": ["array", "null"], "items": {"$ref": "#/$defs/tool"}},
        "tool_choice": {
            "anyOf": [
                {"enum": ["none", "auto", "required", None]},
                {
                    "type": "object",
                    "required": ["type"],
                    "properties": {
                        "type": {"type": "string"},
                        "function": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {"name": {"type": "string"}},
                        },
                    },
                },
            ]
        },
        "max_tokens": _TOKEN_COUNT,
        "max_completion_tokens": _TOKEN_COUNT,
        "n": {"type": ["integer", "null"], "minimum": 1, "maximum": 128},
        "stream": {"type": ["boolean", "null"]},
        "stream_options": {
            "type": ["object", "null"],
            "properties": {"include_usage": {"type": ["boolean", "null"]}},
        },
        "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
        "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "presence_penalty": {"type": ["number", "null"], "minimum": -2, "maximum": 2},
        "frequency_penalty": {"type": ["number", "null"], "minimum": -2, "maximum": 2},
        "stop": {"type": ["string", "array", "null"], "items": {"type": "string"}},
        "user": {"type": ["string", "null"]},
    },
    "$defs": {
        "message": {
            "type": "object",
            "required": ["role"],
            "properties": {
                "role": {"enum": ["system", "developer", "user", "assistant", "tool", "function"]},
                "content": {"type": ["string", "array", "null"], "items": _TEXT_PART},
                "name": {"type": ["string", "null"]},
                "tool_calls": {"type": ["array", "null"], "items": {"$ref": "#/$defs/tool_call"}},
                "tool_call_id": {"type": ["string", "null"]},
            },
        },
        "tool_call": {
            "type": "object",
            "required": ["function"],
            "properties": {
                "id": {"type": "string"},
                "type": {"type": "string"},
                "function": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string"},
                        "arguments": {"type": ["string", "null"]},
                    },
                },
            },
        },
        "tool": {
            "type": "object",
            "required": ["type", "function"],
            "properties": {
                "type": {"const": "function"},
                "function": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "description": {"type": ["string", "null"]},
                        "parameters": {"type": ["object", "null"]},
                        "strict": {"type": ["boolean", "null"]},
                    },
                },
            },
        },
    },
}
Draft202012Validator.check_schema(CHAT_REQUEST_SCHEMA)
_VALIDATOR = Draft202012Validator(CHAT_REQUEST_SCHEMA)


def _no_constant(name: str) -> Any:
    raise InvalidRequest(f"The body is not valid JSON: {name} is not a JSON number.")


def parse_chat_request(body: bytes) -> dict[str, Any]:
    """The request's JSON object, checked; raises `InvalidRequest`."""
    parsed = parse_json_object(body)
    if conforms(parsed):
        return parsed
    # The schema is the authority, and names the field at fault.
    error = best_match(_VALIDATOR.iter_errors(parsed))
    if error is not None:
        raise invalid_field(error)
    return parsed


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object with exact numbers, before any endpoint's own shape:
    no `NaN` or `Infinity`, no NUL, no nesting past `MAX_DEPTH`."""
    try:
        parsed = _loads(body)
    except RecursionError:
        raise _too_deep() from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"The body is not valid JSON: {exc}") from None
    if _may_nest_deeply_or_hold_nul(body):
        _walk(parsed)
    if not isinstance(parsed, dict):
        raise InvalidRequest("The body must be a JSON object.")
    return parsed


def schema_error(validator: Draft202012Validator, body: dict[str, Any]) -> InvalidRequest | None:
    """The error naming the field at fault in `body` by `validator`'s schema, if any."""
    error = best_match(validator.iter_errors(body))
    return invalid_field(error) if error is not None else None


# -- the schema's check, by hand ----------------------------------------------------------
# jsonschema takes about a millisecond for a small request here, a third of what the
# gateway adds to a call; this mirrors the schema in a few microseconds, and the schema
# runs only for a request this finds at fault, to name the field. A property test
# (tests/routing/test_gateway_requests.py) holds the two to the same verdicts.

_ROLES = frozenset(CHAT_REQUEST_SCHEMA["$defs"]["message"]["properties"]["role"]["enum"])
_TOOL_CHOICES = frozenset({"none", "auto", "required"})
_MODEL_LENGTH: int = CHAT_REQUEST_SCHEMA["properties"]["model"]["maxLength"]
_RANGES = {
    name: (rule["minimum"], rule["maximum"])
    for name, rule in CHAT_REQUEST_SCHEMA["properties"].items()
    if "number" in rule.get("type", ())
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _text_or_none(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _content_ok(content: Any) -> bool:
    if content is None or isinstance(content, str):
        return True
    if not isinstance(content, list):
        return False
    return all(
        isinstance(part, dict)
        and isinstance(part.get("type", 0), str)
        and "type" in part
        and isinstance(part.get("text", ""), str)
        for part in content
    )


def _tool_call_ok(call: Any) -> bool:
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        return False
    function = call["function"]
    return (
        isinstance(function.get("name"), str)
        and _text_or_none(function.get("arguments"))
        and isinstance(call.get("id", ""), str)
        and isinstance(call.get("type", ""), str)
    )


def _message_ok(message: Any) -> bool:
    if not isinstance(message, dict):
        return False
    role = message.get("role")
    tool_calls = message.get("tool_calls")
    return (
        isinstance(role, str)
        and role in _ROLES
        and _content_ok(message.get("content"))
        and _text_or_none(message.get("name"))
        and _text_or_none(message.get("tool_call_id"))
        and (
            tool_calls is None
            or (isinstance(tool_calls, list) and all(map(_tool_call_ok, tool_calls)))
        )
    )


def _tool_ok(tool: Any) -> bool:
    if not isinstance(tool, dict) or not isinstance(tool.get("function"), dict):
        return False
    function = tool["function"]
    name = function.get("name")
    parameters = function.get("parameters")
    strict = function.get("strict")
    return (
        tool.get("type") == "function"
        and isinstance(tool.get("type"), str)
        and isinstance(name, str)
        and len(name) >= 1
        and _text_or_none(function.get("description"))
        and (parameters is None or isinstance(parameters, dict))
        and (strict is None or isinstance(strict, bool))
    )


def _tool_choice_ok(choice: Any) -> bool:
    if choice is None or (isinstance(choice, str) and choice in _TOOL_CHOICES):
        return True
    if not isinstance(choice, dict) or not isinstance(choice.get("type"), str):
        return False
    function = choice.get("function", {"name": ""})
    return isinstance(function, dict) and isinstance(function.get("name"), str)


def _count_ok(value: Any, most: int | None = None) -> bool:
    return value is None or (_is_int(value) and value >= 1 and (most is None or value <= most))


def conforms(body: dict[str, Any]) -> bool:
    """Whether `body` is valid against `CHAT_REQUEST_SCHEMA`, cheaply."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(map(_message_ok, messages)):
        return False
    model, tools = body.get("model"), body.get("tools")
    stream_options, stop = body.get("stream_options"), body.get("stop")
    for name, (low, high) in _RANGES.items():
        value = body.get(name)
        if value is not None and not (_is_number(value) and low <= value <= high):
            return False
    return (
        (model is None or (isinstance(model, str) and len(model) <= _MODEL_LENGTH))
        and (tools is None or (isinstance(tools, list) and all(map(_tool_ok, tools))))
        and ("tool_choice" not in body or _tool_choice_ok(body["tool_choice"]))
        and _count_ok(body.get("max_tokens"))
        and _count_ok(body.get("max_completion_tokens"))
        and _count_ok(body.get("n"), 128)
        and (body.get("stream") is None or isinstance(body["stream"], bool))
        and (
            stream_options is None
            or (
                isinstance(stream_options, dict)
                and (
                    stream_options.get("include_usage") is None
                    or isinstance(stream_options["include_usage"], bool)
                )
            )
        )
        and (
            stop is None
            or isinstance(stop, str)
            or (isinstance(stop, list) and all(isinstance(item, str) for item in stop))
        )
        and _text_or_none(body.get("user"))
    )


def _loads(body: bytes) -> Any:
    """Money's exact parsing (`controlplane.money.loads_exact`), refusing `NaN`,
    `Infinity` and `-Infinity`: Python's json reads them, but they are not JSON and
    no amount or count can be one."""
    return json.loads(body, parse_float=Decimal, parse_constant=_no_constant)


def _may_nest_deeply_or_hold_nul(body: bytes) -> bool:
    """False when the text alone shows there is no NUL and no deep nesting, so the walk
    can be skipped (most requests: a handful of brackets). UTF-16 and UTF-32 bodies,
    whose bytes hold zeros, are always walked."""
    return b"\x00" in body or b"\\u0000" in body or body.count(b"[") + body.count(b"{") > MAX_DEPTH


def _walk(value: Any) -> None:
    """Refuse nesting past `MAX_DEPTH` and NUL characters anywhere, in one pass that
    keeps its own stack (a recursive one is what deep nesting breaks)."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        item, depth, where = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise InvalidRequest(
                    f"'{where or 'body'}' contains a NUL character (\\u0000), which cannot be "
                    "stored.",
                    param=where or None,
                )
            continue
        if not isinstance(item, dict | list):
            continue
        if depth > MAX_DEPTH:
            raise _too_deep()
        children: Iterable[tuple[str, Any]]
        if isinstance(item, dict):
            for key in item:
                if "\x00" in key:
                    raise InvalidRequest(
                        f"A key in '{where or 'body'}' contains a NUL character (\\u0000).",
                        param=where or None,
                    )
            children = ((f"{where}.{key}" if where else key, v) for key, v in item.items())
        else:
            children = ((f"{where}[{index}]", v) for index, v in enumerate(item))
        stack.extend((child, depth + 1, path) for path, child in children)


def _too_deep() -> InvalidRequest:
    return InvalidRequest(f"The body nests deeper than {MAX_DEPTH} levels.")


def _param(path: Iterable[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def invalid_field(error: ValidationError) -> InvalidRequest:
    path: list[str | int] = list(error.absolute_path)
    required = error.validator_value if error.validator == "required" else None
    if isinstance(required, list) and isinstance(error.instance, dict):
        path += [name for name in required if name not in error.instance][:1]
    param = _param(path) or None
    detail = error.message if len(error.message) <= 200 else error.message[:200] + "…"
    return InvalidRequest(f"Invalid '{param or 'body'}': {detail}", param=param)


def header_value(headers: Mapping[str, str], name: str) -> str:
    """A header the call's log row keeps, stripped; refused when longer than its column
    or when it carries control characters."""
    value = headers.get(name.lower(), "").strip()
    limit = HEADER_LIMITS.get(name)
    if limit is not None and len(value) > limit:
        raise InvalidRequest(
            f"{name} is {len(value)} characters long; at most {limit} are accepted.", param=name
        )
    if _CONTROL.search(value):
        raise InvalidRequest(f"{name} contains a control character.", param=name)
    return value


def operation_header(headers: Mapping[str, str]) -> str:
    """`X-Operation`: empty, or named as a route's operation is (`operation_name`); any
    other name could never be routed, so it is refused for what it is, naming the
    header, rather than looked up."""
    value = header_value(headers, "X-Operation")
    if value and not _OPERATION_NAME.fullmatch(value):
        raise InvalidRequest(
            f"X-Operation must be an operation's name: {operation_name.message}",
            param="X-Operation",
        )
    return value


_OPERATION_NAME = re.compile(OPERATION_NAME)


def approval_id(headers: Mapping[str, str]) -> int | None:
    value = headers.get("x-approval-id", "").strip()
    if not value:
        return None
    if not _APPROVAL_ID.fullmatch(value):
        raise InvalidRequest("X-Approval-Id must be an approval number.", param="X-Approval-Id")
    return int(value)


def completion_limit(body: Mapping[str, Any]) -> tuple[int | None, str]:
    """The most tokens the caller lets the answer have (`max_completion_tokens`, the
    newer name, or `max_tokens`; the smaller when both are given) and the field it
    comes from."""
    given = [
        (body[name], name) for name in ("max_tokens", "max_completion_tokens") if body.get(name)
    ]
    if not given:
        return None, "max_tokens"
    return min(given)
