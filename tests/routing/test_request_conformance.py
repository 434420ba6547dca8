"""The hand-written fast checks of `/v1/embeddings` and `/v1/audio/speech`
(`conforms`) give their JSON Schema's verdict on every request, valid or not, so each
schema stays the one statement of what its endpoint accepts; a request at fault is
still named by the schema."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.money import dumps_exact
from routing import embedding_requests, speech_requests
from routing.gateway_requests import InvalidRequest
from tests.fuzz.test_gateway import json_values
from tests.fuzz.test_gateway_kinds import embedding_requests as embedding_bodies
from tests.fuzz.test_gateway_kinds import speech_requests as speech_bodies
from tests.routing.test_gateway_requests import _places, _with

EMBEDDING: dict[str, Any] = {
    "model": "m",
    "dimensions": 256,
    "encoding_format": "base64",
    "user": "u",
}
SPEECH: dict[str, Any] = {
    "model": "m",
    "input": "Say ok.",
    "voice": {"id": "alloy"},
    "response_format": "wav",
    "speed": Decimal("1.5"),
    "instructions": "Calmly.",
    "stream_format": "audio",
}
WRONG = [
    0,
    1,
    -1,
    4,
    5,
    3072,
    3073,
    Decimal("0.25"),
    Decimal("0.2"),
    Decimal("4.0"),
    Decimal("4.01"),
    Decimal(256),
    256.0,
    0.5,
    "x",
    "",
    "a" * 201,
    "a" * 4097,
    "float",
    "sse",
    "mp3",
    None,
    True,
    False,
    [],
    {},
    {"id": ""},
    {"id": "x"},
]


def embeddings_verdicts(body: dict[str, Any]) -> tuple[bool, bool]:
    fields = {k: v for k, v in body.items() if k != "input"}
    return embedding_requests.conforms(body), embedding_requests._VALIDATOR.is_valid(fields)


def speech_verdicts(body: dict[str, Any]) -> tuple[bool, bool]:
    return speech_requests.conforms(body), speech_requests._VALIDATOR.is_valid(body)


CHECKS = {"embeddings": (EMBEDDING, embeddings_verdicts), "speech": (SPEECH, speech_verdicts)}


@pytest.mark.parametrize("endpoint", CHECKS)
def test_the_complete_request_passes_both(endpoint: str) -> None:
    complete, verdicts = CHECKS[endpoint]
    assert verdicts(complete) == (True, True)


@pytest.mark.parametrize(
    ("endpoint", "place"),
    [(endpoint, place) for endpoint, (body, _) in CHECKS.items() for place in _places(body)[1:]],
    ids=str,
)
def test_the_fast_check_gives_the_schemas_verdict_on_every_wrong_value_anywhere(
    endpoint: str, place: tuple[Any, ...]
) -> None:
    complete, verdicts = CHECKS[endpoint]
    for wrong in WRONG:
        fast, schema = verdicts(_with(complete, place, wrong))
        assert fast == schema, (place, wrong)
    if len(place) == 1:  # left out
        fast, schema = verdicts({k: v for k, v in complete.items() if k != place[0]})
        assert fast == schema, place


def same_verdict(payload: Any, verdicts: Any) -> None:
    try:
        body = json.loads(dumps_exact(payload), parse_float=Decimal)
    except ValueError:
        return  # NaN or Infinity: refused before either check
    if isinstance(body, dict):
        fast, schema = verdicts(body)
        assert fast == schema, body


@st.composite
def one_field_wrong(draw: st.DrawFn, requests: st.SearchStrategy[Any], complete: Any) -> Any:
    request = draw(st.just(complete) | requests)
    places = _places(request)[1:]
    if not places:
        return request
    return _with(request, draw(st.sampled_from(places)), draw(json_values))


@given(payload=one_field_wrong(embedding_bodies, EMBEDDING) | embedding_bodies | json_values)
@settings(max_examples=300)
def test_the_embeddings_fast_check_gives_the_schemas_verdict_on_anything(payload: Any) -> None:
    same_verdict(payload, embeddings_verdicts)


@given(payload=one_field_wrong(speech_bodies, SPEECH) | speech_bodies | json_values)
@settings(max_examples=300)
def test_the_speech_fast_check_gives_the_schemas_verdict_on_anything(payload: Any) -> None:
    same_verdict(payload, speech_verdicts)


@pytest.mark.parametrize(
    ("parse", "body", "param"),
    [
        (embedding_requests.parse_embedding_request, {"input": "x", "dimensions": 0}, "dimensions"),
        (
            embedding_requests.parse_embedding_request,
            {"input": "x", "encoding_format": "hex"},
            "encoding_format",
        ),
        (speech_requests.parse_speech_request, {"input": "x"}, "voice"),
        (speech_requests.parse_speech_request, {"input": "", "voice": "alloy"}, "input"),
        (speech_requests.parse_speech_request, {"input": "x", "voice": "a", "speed": 9}, "speed"),
    ],
)
def test_a_request_at_fault_is_still_named_by_the_schema(
    parse: Any, body: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse(json.dumps(body).encode())
    assert raised.value.param == param
