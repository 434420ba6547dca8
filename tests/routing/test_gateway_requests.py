"""The gateway's request check: the hand-written fast path (`conforms`) gives the
JSON Schema's verdict on every request, valid or not, so the schema stays the one
statement of what the gateway accepts."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.money import dumps_exact
from routing.gateway_requests import _VALIDATOR, conforms
from tests.fuzz.test_gateway import chat_requests, json_values


def _places(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON value, as the keys and indexes that lead to it."""
    found = [path]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _places(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _places(child, (*path, index))
    return found


def _with(value: Any, path: tuple[Any, ...], replacement: Any) -> Any:
    if not path:
        return replacement
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _with(value[head], rest, replacement)}
    return [_with(item, rest, replacement) if i == head else item for i, item in enumerate(value)]


text = st.text(max_size=10).filter(lambda value: "\x00" not in value)
numbers = st.decimals(min_value=0, max_value=1, places=2)
# Every field the schema names, each once: a wrong value lands on any of them.
complete_requests = st.fixed_dictionaries(
    {
        "messages": st.lists(
            st.fixed_dictionaries(
                {
                    "role": st.sampled_from(["user", "assistant", "tool"]),
                    "content": text | st.just([{"type": "text", "text": "hi"}]),
                    "name": text,
                    "tool_call_id": text,
                    "tool_calls": st.just(
                        [
                            {
                                "id": "c",
                                "type": "function",
                                "function": {"name": "x", "arguments": "{}"},
                            }
                        ]
                    ),
                }
            ),
            min_size=1,
            max_size=2,
        ),
        "model": text,
        "tools": st.just(
            [
                {
                    "type": "function",
                    "function": {
                        "name": "search",
                        "description": "d",
                        "parameters": {"type": "object"},
                        "strict": False,
                    },
                }
            ]
        ),
        "tool_choice": st.sampled_from(["auto", {"type": "function", "function": {"name": "x"}}]),
        "max_tokens": st.integers(1, 100),
        "max_completion_tokens": st.integers(1, 100),
        "n": st.integers(1, 128),
        "stream": st.booleans(),
        "stream_options": st.just({"include_usage": True}),
        "temperature": numbers,
        "top_p": numbers,
        "presence_penalty": numbers,
        "frequency_penalty": numbers,
        "stop": st.just(["\n"]) | text,
        "user": text,
    }
)


@st.composite
def one_field_wrong(draw: st.DrawFn) -> Any:
    """A well-formed request with one value anywhere in it replaced by any JSON value:
    the requests the two checks could most easily disagree on."""
    request = draw(complete_requests)
    path = draw(st.sampled_from(_places(request)[1:]))
    return _with(request, path, draw(json_values))


@given(payload=one_field_wrong())
def test_the_fast_check_gives_the_schemas_verdict_on_one_field_wrong(payload: Any) -> None:
    assert_same_verdict(payload)


@given(payload=chat_requests | json_values)
def test_the_fast_check_gives_the_schemas_verdict_on_anything(payload: Any) -> None:
    assert_same_verdict(payload)


def assert_same_verdict(payload: Any) -> None:
    try:
        body = json.loads(dumps_exact(payload), parse_float=Decimal)
    except ValueError:
        return  # NaN or Infinity: refused before either check
    if isinstance(body, dict):
        assert conforms(body) == _VALIDATOR.is_valid(body)


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "user", "content": "hi"}]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
        {
            "messages": [{"role": "assistant", "content": None, "tool_calls": []}],
            "tools": [{"type": "function", "function": {"name": "x", "parameters": {}}}],
            "tool_choice": {"type": "function", "function": {"name": "x"}},
            "temperature": 0,
            "stop": ["\n"],
        },
    ],
)
def test_common_requests_pass_the_fast_check(body: dict[str, Any]) -> None:
    assert conforms(body)
    assert _VALIDATOR.is_valid(body)


COMPLETE = {
    "messages": [
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "hi"}],
            "name": "n",
            "tool_call_id": "t",
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "x", "arguments": "{}"}}
            ],
        }
    ],
    "model": "m",
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "search",
                "description": "d",
                "parameters": {"type": "object"},
                "strict": False,
            },
        }
    ],
    "tool_choice": {"type": "function", "function": {"name": "x"}},
    "max_tokens": 5,
    "max_completion_tokens": 5,
    "n": 1,
    "stream": False,
    "stream_options": {"include_usage": True},
    "temperature": Decimal("0.5"),
    "top_p": Decimal("0.5"),
    "presence_penalty": Decimal("0.5"),
    "frequency_penalty": Decimal("0.5"),
    "stop": ["\n"],
    "user": "u",
}
WRONG = [
    5,
    -1,
    0,
    129,
    Decimal("1.5"),
    Decimal("-2.5"),
    Decimal(3),
    "x",
    "",
    None,
    True,
    [],
    {},
    [5],
]


@pytest.mark.parametrize("place", _places(COMPLETE)[1:], ids=str)
def test_the_fast_check_gives_the_schemas_verdict_on_every_wrong_value_anywhere(
    place: tuple[Any, ...],
) -> None:
    assert conforms(COMPLETE)
    for wrong in WRONG:
        body = _with(COMPLETE, place, wrong)
        assert conforms(body) == _VALIDATOR.is_valid(body), (place, wrong)
