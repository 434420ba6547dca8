"""What `POST /v1/embeddings` accepts: OpenAI's shape, checked before anything is
reserved, so a malformed request is refused with a 400 naming the field.

`input` is a string, a list of strings, a token array (a list of integers) or a list
of token arrays, as OpenAI takes it: no empty string or array anywhere, at most
`MOST_INPUTS` inputs (OpenAI's limit, which also keeps a request of 100,000 strings
from reaching the ledger). It is checked by hand, in one pass, before the schema
sees the other fields: a schema's union of four shapes over thousands of items would
be slow to check and vague about which item is wrong.
"""

from __future__ import annotations

import math
from typing import Any

from jsonschema import Draft202012Validator

from routing.gateway_requests import InvalidRequest, parse_json_object, schema_error
from routing.models import OperationLog
from routing.pricing import CHARS_PER_TOKEN
from routing.providers.embeddings import EmbeddingInput, EmbeddingRequest

MOST_INPUTS = 2048  # OpenAI's limit of inputs in one request
MOST_DIMENSIONS = 3072  # text-embedding-3-large's, the largest OpenAI offers
MOST_TOKEN_ID = 2**31 - 1

EMBEDDING_REQUEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "model": {
            "type": ["string", "null"],
            "maxLength": OperationLog._meta.get_field("model_requested").max_length,
        },
        "dimensions": {"type": ["integer", "null"], "minimum": 1, "maximum": MOST_DIMENSIONS},
        "encoding_format": {"enum": ["float", "base64", None]},
        "user": {"type": ["string", "null"]},
    },
}
Draft202012Validator.check_schema(EMBEDDING_REQUEST_SCHEMA)
_VALIDATOR = Draft202012Validator(EMBEDDING_REQUEST_SCHEMA)
HANDLED_FIELDS = {"model", "input", "dimensions", "encoding_format"}


def parse_embedding_request(body: bytes) -> EmbeddingRequest:
    """The request, checked; raises `InvalidRequest` naming the field at fault."""
    parsed = parse_json_object(body)
    if "input" not in parsed:
        raise InvalidRequest("'input' is required.", param="input")
    inputs = _inputs(parsed["input"])
    if not conforms(parsed):
        # The schema is the authority, and names the field at fault.
        refused = schema_error(_VALIDATOR, {k: v for k, v in parsed.items() if k != "input"})
        if refused is not None:
            raise refused
    return EmbeddingRequest(
        model=str(parsed.get("model") or ""),
        input=parsed["input"],
        inputs=inputs,
        prompt_tokens=sum(map(_estimated_tokens, inputs)),
        dimensions=parsed.get("dimensions"),
        encoding_format=parsed.get("encoding_format") or "float",
        extra={k: v for k, v in parsed.items() if k not in HANDLED_FIELDS},
    )


# jsonschema takes about 30 µs on these four fields, three times what chat's whole check
# takes (`gateway_requests.conforms`); this mirrors the schema in a microsecond, and
# the schema runs only for a request this finds at fault. A property test
# (tests/routing/test_request_conformance.py) holds the two to the same verdicts.
_MODEL_LENGTH: int = EMBEDDING_REQUEST_SCHEMA["properties"]["model"]["maxLength"]
_ENCODINGS = frozenset(
    e for e in EMBEDDING_REQUEST_SCHEMA["properties"]["encoding_format"]["enum"] if e
)


def conforms(body: dict[str, Any]) -> bool:
    """Whether `body`'s fields but `input` are valid against `EMBEDDING_REQUEST_SCHEMA`,
    cheaply."""
    model, dimensions = body.get("model"), body.get("dimensions")
    encoding, user = body.get("encoding_format"), body.get("user")
    return (
        (model is None or (isinstance(model, str) and len(model) <= _MODEL_LENGTH))
        and (dimensions is None or (_whole(dimensions) and 1 <= dimensions <= MOST_DIMENSIONS))
        and (encoding is None or (isinstance(encoding, str) and encoding in _ENCODINGS))
        and (user is None or isinstance(user, str))
    )


def _whole(value: Any) -> bool:
    """JSON Schema's integer, as jsonschema reads it: a whole `float` is one too."""
    return _is_token(value) or (isinstance(value, float) and value.is_integer())


def _inputs(value: Any) -> list[EmbeddingInput]:
    if isinstance(value, str):
        _check_text(value, "input")
        return [value]
    if not isinstance(value, list):
        raise InvalidRequest(
            "'input' must be a string, a list of strings, a token array or a list of token arrays.",
            param="input",
        )
    if not value:
        raise InvalidRequest("'input' is an empty list; give at least one input.", param="input")
    if len(value) > MOST_INPUTS:
        raise InvalidRequest(
            f"'input' has {len(value):,} items; at most {MOST_INPUTS:,} are accepted in one "
            "request.",
            param="input",
        )
    if all(_is_token(item) for item in value):
        return [_token_array(value, "input")]
    inputs: list[EmbeddingInput] = []
    for index, item in enumerate(value):
        where = f"input[{index}]"
        if isinstance(item, str):
            _check_text(item, where)
            inputs.append(item)
        elif isinstance(item, list):
            inputs.append(_token_array(item, where))
        else:
            raise InvalidRequest(
                f"'{where}' must be a string or a token array (a list of integers).", param=where
            )
    return inputs


def _check_text(text: str, where: str) -> None:
    if not text:
        raise InvalidRequest(f"'{where}' is an empty string; inputs cannot be empty.", param=where)


def _is_token(item: Any) -> bool:
    return isinstance(item, int) and not isinstance(item, bool)


def _token_array(items: list[Any], where: str) -> list[int]:
    if not items:
        raise InvalidRequest(f"'{where}' is an empty token array.", param=where)
    for index, item in enumerate(items):
        if not _is_token(item) or not 0 <= item <= MOST_TOKEN_ID:
            raise InvalidRequest(
                f"'{where}[{index}]' must be a token id (an integer from 0 to {MOST_TOKEN_ID}).",
                param=f"{where}[{index}]",
            )
    return items


def _estimated_tokens(item: EmbeddingInput) -> int:
    """A token array is its tokens; a text about four characters a token (as a chat's
    estimate), at least one."""
    if isinstance(item, str):
        return max(1, math.ceil(len(item) / CHARS_PER_TOKEN))
    return len(item)
