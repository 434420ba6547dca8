"""What `POST /v1/audio/speech` accepts: OpenAI's shape, checked before anything is
reserved, so a malformed request is refused with a 400 naming the field.

`input` is the text to speak, 1 to `MOST_CHARACTERS` characters (OpenAI's limit);
`voice` a voice's name or `{"id": ...}`; `response_format` one of OpenAI's six;
`speed` 0.25 to 4.0. OpenAI's `stream_format: "sse"` (audio as JSON events) is not
served: the gateway streams the audio's bytes (`"audio"`), and says so.
"""

from __future__ import annotations

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
