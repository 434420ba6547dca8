"""What `POST /v1/audio/speech` accepts: OpenAI's shape, checked before anything is
reserved, so a malformed request is refused with a 400 naming the field.

`input` is the text to speak, 1 to `MOST_CHARACTERS` characters (OpenAI's limit);
`voice` a voice's name or `{"id": ...}`; `response_format` one of OpenAI's six;
`speed` 0.25 to 4.0. OpenAI's `stream_format: "sse"` (audio as JSON events) is not
served: the gateway streams the audio's bytes (`"audio"`), and says so.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from jsonschema import Draft202012Validator

from routing.gateway_requests import InvalidRequest, parse_json_object, schema_error
from routing.models import OperationLog
from routing.providers.speech import MEDIA_TYPES, SpeechRequest

MOST_CHARACTERS = 4096  # OpenAI's limit of input text

SPEECH_REQUEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["input", "voice"],
    "properties": {
        "model": {
            "type": ["string", "null"],
            "maxLength": OperationLog._meta.get_field("model_requested").max_length,
        },
        "input": {"type": "string", "minLength": 1, "maxLength": MOST_CHARACTERS},
        "voice": {
            "anyOf": [
                {"type": "string", "minLength": 1, "maxLength": 200},
                {
                    "type": "object",
                    "required": ["id"],
                    "properties": {"id": {"type": "string", "minLength": 1, "maxLength": 200}},
                },
            ]
        },
        "response_format": {"enum": [*MEDIA_TYPES, None]},
        "speed": {"type": ["number", "null"], "minimum": 0.25, "maximum": 4},
        "instructions": {"type": ["string", "null"], "maxLength": MOST_CHARACTERS},
        "stream_format": {"enum": ["audio", None]},
    },
}
Draft202012Validator.check_schema(SPEECH_REQUEST_SCHEMA)
_VALIDATOR = Draft202012Validator(SPEECH_REQUEST_SCHEMA)
HANDLED_FIELDS = {"model", "input", "voice", "response_format", "speed"}


def parse_speech_request(body: bytes) -> SpeechRequest:
    """The request, checked; raises `InvalidRequest` naming the field at fault."""
    parsed = parse_json_object(body)
    if parsed.get("stream_format") == "sse":
        raise InvalidRequest(
            "'stream_format' \"sse\" is not served by this gateway: it streams the audio "
            'itself ("audio").',
            param="stream_format",
        )
    if not conforms(parsed):
        # The schema is the authority, and names the field at fault.
        refused = schema_error(_VALIDATOR, parsed)
        if refused is not None:
            raise refused
    return SpeechRequest(
        model=str(parsed.get("model") or ""),
        input=parsed["input"],
        voice=parsed["voice"],
        response_format=parsed.get("response_format") or "mp3",
        speed=parsed.get("speed"),
        extra={k: v for k, v in parsed.items() if k not in HANDLED_FIELDS},
    )


# jsonschema takes about 50 µs on a small speech request, five times what chat's whole
# check takes (`gateway_requests.conforms`); this mirrors the schema in a microsecond or
# two, and the schema runs only for a request this finds at fault. A property test
# (tests/routing/test_request_conformance.py) holds the two to the same verdicts.
_PROPERTIES = SPEECH_REQUEST_SCHEMA["properties"]
_MODEL_LENGTH: int = _PROPERTIES["model"]["maxLength"]
_VOICE_LENGTH: int = _PROPERTIES["voice"]["anyOf"][0]["maxLength"]
_FORMATS = frozenset(f for f in _PROPERTIES["response_format"]["enum"] if f)
_STREAM_FORMATS = frozenset(f for f in _PROPERTIES["stream_format"]["enum"] if f)
_SPEEDS = (_PROPERTIES["speed"]["minimum"], _PROPERTIES["speed"]["maximum"])


def _text_within(value: Any, least: int, most: int) -> bool:
    return isinstance(value, str) and least <= len(value) <= most


def _one_of(value: Any, allowed: frozenset[str]) -> bool:
    return value is None or (isinstance(value, str) and value in allowed)


def conforms(body: dict[str, Any]) -> bool:
    """Whether `body` is valid against `SPEECH_REQUEST_SCHEMA`, cheaply."""
    model, voice, speed = body.get("model"), body.get("voice"), body.get("speed")
    instructions = body.get("instructions")
    return (
        (model is None or (isinstance(model, str) and len(model) <= _MODEL_LENGTH))
        and _text_within(body.get("input"), 1, MOST_CHARACTERS)
        and (
            _text_within(voice, 1, _VOICE_LENGTH)
            or (isinstance(voice, dict) and _text_within(voice.get("id"), 1, _VOICE_LENGTH))
        )
        and _one_of(body.get("response_format"), _FORMATS)
        and (
            speed is None
            or (
                isinstance(speed, int | float | Decimal)
                and not isinstance(speed, bool)
                and _SPEEDS[0] <= speed <= _SPEEDS[1]
            )
        )
        and (instructions is None or _text_within(instructions, 0, MOST_CHARACTERS))
        and _one_of(body.get("stream_format"), _STREAM_FORMATS)
    )
