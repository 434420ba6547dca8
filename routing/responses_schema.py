"""What `POST /v1/responses` accepts, as a JSON Schema (`RESPONSES_REQUEST_SCHEMA`, the
one statement of it: its errors name the field at fault), and `conforms`, the same
check by hand for the hot path.

Why by hand: jsonschema takes about 40 µs on the smallest Responses request (its
`$ref`s, `if`/`then` and `anyOf` each build a validator), more than the rest of the
request's translation; chat has the same fast path
(`routing.gateway_requests.conforms`). `conforms` runs in a few microseconds, and
the schema still runs on any request it does not pass, to name the field at fault. A
property test (tests/routing/test_responses_schema.py) holds the two to the same
verdicts.

JSON Schema's types, as jsonschema reads them: an integer is an `int` (not a `bool`)
or a whole `float`; a number any number but a `bool`; `enum` and `const` compare
strings as strings.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from jsonschema import Draft202012Validator

from routing.models import OperationLog

_TEXT = {"type": "string"}
_TEXT_OR_NONE = {"type": ["string", "null"]}


def _when(kind: str, then: dict[str, Any]) -> dict[str, Any]:
    """The rule for an object of one `type` (so an error names that object's field)."""
    return {
        "if": {"required": ["type"], "properties": {"type": {"const": kind}}},
        "then": then,
    }


RESPONSES_REQUEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["input"],
    "properties": {
        "model": {
            "type": ["string", "null"],
            "maxLength": OperationLog._meta.get_field("model_requested").max_length,
        },
        "instructions": _TEXT_OR_NONE,
        "input": {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/input_item"}},
            ]
        },
        "tools": {"type": ["array", "null"], "items": {"$ref": "#/$defs/tool"}},
        "tool_choice": {
            "anyOf": [
                {"enum": ["none", "auto", "required", None]},
                {
                    "type": "object",
                    "required": ["type", "name"],
                    "properties": {"type": {"const": "function"}, "name": _TEXT},
                },
            ]
        },
        "max_output_tokens": {"type": ["integer", "null"], "minimum": 1},
        "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
        "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "stream": {"type": ["boolean", "null"]},
        "store": {"type": ["boolean", "null"]},
        "parallel_tool_calls": {"type": ["boolean", "null"]},
        "metadata": {
            "type": ["object", "null"],
            "maxProperties": 16,
            "additionalProperties": {"type": "string", "maxLength": 512},
        },
        "text": {
            "type": ["object", "null"],
            "properties": {"format": {"$ref": "#/$defs/format"}},
        },
        "reasoning": {
            "type": ["object", "null"],
            "properties": {
                "effort": {"enum": ["none", "minimal", "low", "medium", "high", "xhigh", None]}
            },
        },
        "user": _TEXT_OR_NONE,
    },
    "$defs": {
        "input_item": {
            "type": "object",
            "properties": {
                "type": {"enum": ["message", "function_call", "function_call_output", "reasoning"]},
            },
            "allOf": [
                {
                    # A message may leave out its type (the easy input message).
                    "if": {
                        "anyOf": [
                            {"not": {"required": ["type"]}},
                            {"properties": {"type": {"const": "message"}}},
                        ]
                    },
                    "then": {"$ref": "#/$defs/message"},
                },
                _when(
                    "function_call",
                    {
                        "required": ["call_id", "name", "arguments"],
                        "properties": {
                            "call_id": {"type": "string", "minLength": 1},
                            "name": {"type": "string", "minLength": 1},
                            "arguments": _TEXT,
                        },
                    },
                ),
                _when(
                    "function_call_output",
                    {
                        "required": ["call_id", "output"],
                        "properties": {
                            "call_id": {"type": "string", "minLength": 1},
                            "output": {
                                "anyOf": [
                                    {"type": "string"},
                                    {"type": "array", "items": {"$ref": "#/$defs/text_part"}},
                                ]
                            },
                        },
                    },
                ),
            ],
        },
        "message": {
            "type": "object",
            "required": ["role", "content"],
            "properties": {
                "role": {"enum": ["user", "system", "developer", "assistant"]},
                "content": {
                    "anyOf": [
                        {"type": "string"},
                        {"type": "array", "items": {"$ref": "#/$defs/content_part"}},
                    ]
                },
            },
        },
        "text_part": {
            "type": "object",
            "required": ["type", "text"],
            "properties": {"type": {"enum": ["input_text", "output_text"]}, "text": _TEXT},
        },
        "content_part": {
            "type": "object",
            "required": ["type"],
            "properties": {
                "type": {"enum": ["input_text", "output_text", "input_image", "refusal"]}
            },
            "allOf": [
                _when("input_text", {"required": ["text"], "properties": {"text": _TEXT}}),
                _when("output_text", {"required": ["text"], "properties": {"text": _TEXT}}),
                _when("refusal", {"required": ["refusal"], "properties": {"refusal": _TEXT}}),
                # A file id names a stored upload: the gateway stores none.
                _when(
                    "input_image",
                    {
                        "required": ["image_url"],
                        "properties": {
                            "image_url": {"type": "string", "minLength": 1},
                            "detail": {"enum": ["auto", "low", "high", None]},
                        },
                    },
                ),
            ],
        },
        # Function tools only: the hosted ones (web search, files...) run at OpenAI.
        "tool": {
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"const": "function"}},
            "allOf": [
                _when(
                    "function",
                    {
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "description": _TEXT_OR_NONE,
                            "parameters": {"type": ["object", "null"]},
                            "strict": {"type": ["boolean", "null"]},
                        },
                    },
                )
            ],
        },
        "format": {
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"enum": ["text", "json_object", "json_schema"]}},
            "allOf": [
                _when(
                    "json_schema",
                    {
                        "required": ["name", "schema"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "schema": {"type": "object"},
                            "description": _TEXT_OR_NONE,
                            "strict": {"type": ["boolean", "null"]},
                        },
                    },
                )
            ],
        },
    },
}
Draft202012Validator.check_schema(RESPONSES_REQUEST_SCHEMA)
VALIDATOR = Draft202012Validator(RESPONSES_REQUEST_SCHEMA)

# -- the schema's check, by hand ----------------------------------------------------

_PROPERTIES = RESPONSES_REQUEST_SCHEMA["properties"]
_DEFS = RESPONSES_REQUEST_SCHEMA["$defs"]
_MODEL_LENGTH: int = _PROPERTIES["model"]["maxLength"]
_METADATA = _PROPERTIES["metadata"]
_METADATA_KEYS: int = _METADATA["maxProperties"]
_METADATA_LENGTH: int = _METADATA["additionalProperties"]["maxLength"]
_ITEM_TYPES = frozenset(_DEFS["input_item"]["properties"]["type"]["enum"])
_ROLES = frozenset(_DEFS["message"]["properties"]["role"]["enum"])
_TEXT_PART_TYPES = frozenset(_DEFS["text_part"]["properties"]["type"]["enum"])
_CONTENT_PART_TYPES = frozenset(_DEFS["content_part"]["properties"]["type"]["enum"])
_FORMAT_TYPES = frozenset(_DEFS["format"]["properties"]["type"]["enum"])
_TOOL_CHOICES = frozenset(c for c in _PROPERTIES["tool_choice"]["anyOf"][0]["enum"] if c)
_EFFORTS = frozenset(e for e in _PROPERTIES["reasoning"]["properties"]["effort"]["enum"] if e)
_IMAGE_RULE = next(
    rule["then"]
    for rule in _DEFS["content_part"]["allOf"]
    if rule["if"]["properties"]["type"]["const"] == "input_image"
)
_DETAILS = frozenset(d for d in _IMAGE_RULE["properties"]["detail"]["enum"] if d is not None)
_RANGES = {
    name: (_PROPERTIES[name]["minimum"], _PROPERTIES[name]["maximum"])
    for name in ("temperature", "top_p")
}
_FLAGS = ("stream", "store", "parallel_tool_calls")


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _filled(value: Any) -> bool:
    return isinstance(value, str) and len(value) >= 1


def _text_or_none(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _one_of(value: Any, allowed: frozenset[str]) -> bool:
    return isinstance(value, str) and value in allowed


def _integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _number(value: Any) -> bool:
    # (Any other `numbers.Number` fails here and goes to the schema.)
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _text_part(part: Any) -> bool:
    return (
        isinstance(part, dict)
        and _one_of(part.get("type"), _TEXT_PART_TYPES)
        and _text(part.get("text"))
    )


def _content_part(part: Any) -> bool:
    if not isinstance(part, dict):
        return False
    kind = part.get("type")
    if not _one_of(kind, _CONTENT_PART_TYPES):
        return False
    if kind == "refusal":
        return _text(part.get("refusal"))
    if kind == "input_image":
        detail = part.get("detail")
        return _filled(part.get("image_url")) and (detail is None or _one_of(detail, _DETAILS))
    return _text(part.get("text"))  # input_text, output_text


def _text_or_parts(value: Any, part_ok: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(map(part_ok, value)))


def _input_item(item: Any) -> bool:
    if not isinstance(item, dict):
        return False
    if "type" in item and not _one_of(item["type"], _ITEM_TYPES):
        return False
    kind = item.get("type", "message")
    if kind == "message":
        return (
            _one_of(item.get("role"), _ROLES)
            and "content" in item
            and _text_or_parts(item["content"], _content_part)
        )
    if kind == "function_call":
        return (
            _filled(item.get("call_id"))
            and _filled(item.get("name"))
            and _text(item.get("arguments"))
        )
    if kind == "function_call_output":
        return (
            _filled(item.get("call_id"))
            and "output" in item
            and _text_or_parts(item["output"], _text_part)
        )
    return True  # reasoning: passed over


def _tool(tool: Any) -> bool:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        return False
    parameters, strict = tool.get("parameters"), tool.get("strict")
    return (
        _filled(tool.get("name"))
        and _text_or_none(tool.get("description"))
        and (parameters is None or isinstance(parameters, dict))
        and (strict is None or isinstance(strict, bool))
    )


def _tool_choice(choice: Any) -> bool:
    if choice is None or _one_of(choice, _TOOL_CHOICES):
        return True
    return (
        isinstance(choice, dict) and choice.get("type") == "function" and _text(choice.get("name"))
    )


def _format(answer_format: Any) -> bool:
    if not isinstance(answer_format, dict):
        return False
    kind = answer_format.get("type")
    if not _one_of(kind, _FORMAT_TYPES):
        return False
    if kind != "json_schema":
        return True
    strict = answer_format.get("strict")
    return (
        _filled(answer_format.get("name"))
        and isinstance(answer_format.get("schema"), dict)
        and _text_or_none(answer_format.get("description"))
        and (strict is None or isinstance(strict, bool))
    )


def _metadata(metadata: Any) -> bool:
    return metadata is None or (
        isinstance(metadata, dict)
        and len(metadata) <= _METADATA_KEYS
        and all(isinstance(v, str) and len(v) <= _METADATA_LENGTH for v in metadata.values())
    )


def _options(body: dict[str, Any]) -> bool:
    """`text` and `reasoning`: objects whose one checked field may be left out."""
    text, reasoning = body.get("text"), body.get("reasoning")
    if text is not None and not (
        isinstance(text, dict) and ("format" not in text or _format(text["format"]))
    ):
        return False
    return reasoning is None or (
        isinstance(reasoning, dict)
        and (
            "effort" not in reasoning
            or reasoning["effort"] is None
            or _one_of(reasoning["effort"], _EFFORTS)
        )
    )


def conforms(body: dict[str, Any]) -> bool:
    """Whether `body` is valid against `RESPONSES_REQUEST_SCHEMA`, cheaply."""
    if "input" not in body:
        return False
    given = body["input"]
    if not isinstance(given, str) and not (
        isinstance(given, list) and given and all(map(_input_item, given))
    ):
        return False
    model, tools, most = body.get("model"), body.get("tools"), body.get("max_output_tokens")
    for name, (low, high) in _RANGES.items():
        value = body.get(name)
        if value is not None and not (_number(value) and low <= value <= high):
            return False
    return (
        (model is None or (isinstance(model, str) and len(model) <= _MODEL_LENGTH))
        and _text_or_none(body.get("instructions"))
        and _text_or_none(body.get("user"))
        and (tools is None or (isinstance(tools, list) and all(map(_tool, tools))))
        and ("tool_choice" not in body or _tool_choice(body["tool_choice"]))
        and (most is None or (_integer(most) and most >= 1))
        and all(body.get(name) is None or isinstance(body[name], bool) for name in _FLAGS)
        and _metadata(body.get("metadata"))
        and _options(body)
    )
