"""`/v1/responses`'s request check: the hand-written fast path
(`routing.responses_schema.conforms`) gives the JSON Schema's verdict on every
request, valid or not, so the schema stays the one statement of what the gateway
accepts; and a request it passes or not gets the same answer."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.money import dumps_exact
from routing.gateway_requests import InvalidRequest
from routing.responses_requests import parse_responses_request
from routing.responses_schema import VALIDATOR, conforms
from tests.fuzz.test_gateway import json_values
from tests.fuzz.test_gateway_responses import responses_requests
from tests.routing.test_gateway_requests import _places, _with

# Every field and every kind of item and part the schema names: a wrong value lands
# on any of them.
COMPLETE: dict[str, Any] = {
    "model": "m",
    "instructions": "Be brief.",
    "input": [
        {"role": "user", "content": "hi"},
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": "https://x/a.png", "detail": "low"},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": "ok"},
                {"type": "refusal", "refusal": "no"},
            ],
        },
        {"type": "function_call", "call_id": "c1", "name": "search", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "found"},
        {
            "type": "function_call_output",
            "call_id": "c2",
            "output": [{"type": "input_text", "text": "found"}],
        },
        {"type": "reasoning", "summary": []},
    ],
    "tools": [
        {
            "type": "function",
            "name": "search",
            "description": "d",
            "parameters": {"type": "object"},
            "strict": True,
        }
    ],
    "tool_choice": {"type": "function", "name": "search"},
    "max_output_tokens": 16,
    "temperature": Decimal("0.5"),
    "top_p": 1,
    "stream": False,
    "store": False,
    "parallel_tool_calls": True,
    "metadata": {"team": "search"},
    "text": {
        "format": {
            "type": "json_schema",
            "name": "answer",
            "schema": {"type": "object"},
            "description": "d",
            "strict": True,
        }
    },
    "reasoning": {"effort": "low"},
    "user": "u",
}
WRONG = [
    5,
    -1,
    0,
    3,
    Decimal("1.5"),
    Decimal("-2.5"),
    Decimal(3),
    1.0,
    "x",
    "",
    "a" * 600,
    None,
    True,
    False,
    [],
    {},
    [5],
    {"type": "function"},
    {str(key): "v" for key in range(17)},  # past metadata's 16 keys
    "function",
    "message",
    "input_text",
    "json_schema",
    "auto",
    "low",
]


def assert_same_verdict(payload: Any) -> None:
    try:
        body = json.loads(dumps_exact(payload), parse_float=Decimal)
    except ValueError:
        return  # NaN or Infinity: refused before either check
    if isinstance(body, dict):
        assert conforms(body) == VALIDATOR.is_valid(body), body


def test_the_complete_request_passes_both() -> None:
    assert VALIDATOR.is_valid(COMPLETE)
    assert conforms(COMPLETE)


@pytest.mark.parametrize("place", _places(COMPLETE)[1:], ids=str)
def test_the_fast_check_gives_the_schemas_verdict_on_every_wrong_value_anywhere(
    place: tuple[Any, ...],
) -> None:
    for wrong in WRONG:
        body = _with(COMPLETE, place, wrong)
        assert conforms(body) == VALIDATOR.is_valid(body), (place, wrong)


@pytest.mark.parametrize("place", _places(COMPLETE)[1:], ids=str)
def test_the_fast_check_gives_the_schemas_verdict_on_every_field_left_out(
    place: tuple[Any, ...],
) -> None:
    *parent_path, last = place
    parent = COMPLETE
    for step in parent_path:
        parent = parent[step]
    if not isinstance(parent, dict):
        return
    left_out = {key: value for key, value in parent.items() if key != last}
    body = _with(COMPLETE, tuple(parent_path), left_out)
    assert conforms(body) == VALIDATOR.is_valid(body), place


@st.composite
def one_field_wrong(draw: st.DrawFn) -> Any:
    request = draw(st.just(COMPLETE) | responses_requests)
    places = _places(request)[1:]
    if not places:
        return request
    return _with(request, draw(st.sampled_from(places)), draw(json_values))


@given(payload=one_field_wrong())
@settings(max_examples=300)
def test_the_fast_check_gives_the_schemas_verdict_on_one_field_wrong(payload: Any) -> None:
    assert_same_verdict(payload)


@given(payload=responses_requests | json_values)
@settings(max_examples=300)
def test_the_fast_check_gives_the_schemas_verdict_on_anything(payload: Any) -> None:
    assert_same_verdict(payload)


@pytest.mark.parametrize(
    "body",
    [
        {"input": "Say ok."},
        {"model": "m", "input": "Say ok.", "max_output_tokens": 16},
        {"input": [{"role": "user", "content": "hi"}], "stream": True},
    ],
)
def test_common_requests_pass_the_fast_check(body: dict[str, Any]) -> None:
    assert conforms(body)


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"model": "m"}, "input", "'input' is a required property"),
        ({"input": []}, "input", None),
        ({"input": "x", "max_output_tokens": 0}, "max_output_tokens", None),
        ({"input": [{"role": "robot", "content": "x"}]}, "input", None),
        ({"input": "x", "tools": [{"type": "function", "name": ""}]}, "tools", None),
        ({"input": "x", "temperature": 3}, "temperature", None),
    ],
)
def test_a_request_at_fault_is_still_named_by_the_schema(
    body: dict[str, Any], param: str | None, message: str | None
) -> None:
    assert not conforms(body)
    with pytest.raises(InvalidRequest) as raised:
        parse_responses_request(json.dumps(body).encode())
    if param is not None:
        assert (raised.value.param or "").startswith(param)
    if message is not None:
        assert message in str(raised.value)
