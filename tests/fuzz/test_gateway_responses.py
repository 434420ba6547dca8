"""Fuzzing `/v1/responses` as test_gateway.py fuzzes `/v1/chat/completions`: any body,
header and query string gets an answer below 500, a 4xx carries an OpenAI-style JSON
error, a stream always ends with the response's last event (`response.completed`,
`response.incomplete`, or `response.failed` for an upstream failure), its events
numbered without gaps, and the books stay whole.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.money import loads_exact
from routing.gateway_responses import GATEWAY_FAILED
from tests.fuzz.test_gateway import (  # noqa: F401  (raw_key is a fixture)
    OPERATIONS,
    _assert_books_whole,
    _body,
    _send,
    any_text,
    headers,
    json_values,
    mostly,
    query_strings,
    raw_bodies,
    raw_key,
)
from tests.routing import asgi_driver

pytestmark = pytest.mark.django_db

RESPONSES_URL = "/v1/responses"
RESPONSES = "POST /v1/responses"
RESPONSES_STREAMED = "POST /v1/responses (stream)"
LAST_EVENTS = {"response.completed", "response.incomplete", "response.failed"}


@pytest.fixture
def service_key(request: pytest.FixtureRequest) -> str:
    """The chat fuzz suite's key and routes (`raw_key`): free, priced, approved, dear."""
    key: str = request.getfixturevalue("raw_key")
    return key


texts = st.sampled_from(["Hello", "please search the logs", "lookup the deploy"]) | st.text(
    max_size=60
)
content_part = st.one_of(
    st.fixed_dictionaries({"type": st.just("input_text"), "text": mostly(texts, json_values)}),
    st.fixed_dictionaries(
        {"type": st.just("input_image"), "image_url": st.just("https://example.com/a.png")},
        optional={"detail": st.sampled_from(["low", "high", "auto", "huge"])},
    ),
    st.fixed_dictionaries({"type": st.sampled_from(["input_file", "output_text", "refusal"])}),
)
message_item = st.fixed_dictionaries(
    {
        "role": mostly(st.sampled_from(["user", "system", "developer", "assistant"]), json_values),
        "content": mostly(texts | st.lists(content_part, max_size=3), json_values),
    },
    optional={"type": st.just("message")},
)
function_call_item = st.fixed_dictionaries(
    {
        "type": st.just("function_call"),
        "call_id": mostly(st.sampled_from(["call_1", "call_2"]), json_values),
        "name": mostly(st.sampled_from(["search", "lookup"]), json_values),
        "arguments": mostly(st.just('{"q": "logs"}'), json_values),
    }
)
function_output_item = st.fixed_dictionaries(
    {
        "type": st.just("function_call_output"),
        "call_id": mostly(st.sampled_from(["call_1", "call_2"]), json_values),
        "output": mostly(texts, json_values),
    }
)
input_item = mostly(
    st.one_of(message_item, message_item, function_call_item, function_output_item),
    st.fixed_dictionaries({"type": st.sampled_from(["item_reference", "reasoning", "web"])})
    | json_values,
)
function_tool = st.fixed_dictionaries(
    {
        "type": mostly(st.just("function"), json_values),
        "name": mostly(st.just("search"), json_values),
    },
    optional={
        "parameters": mostly(
            st.just({"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}),
            json_values,
        ),
        "description": json_values,
        "strict": json_values,
    },
)
answer_format = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object", "xml"])}),
    st.fixed_dictionaries(
        {"type": st.just("json_schema"), "name": st.just("answer"), "schema": json_values}
    ),
)
responses_requests = st.fixed_dictionaries(
    {"input": mostly(texts | st.lists(input_item, min_size=1, max_size=4), json_values)},
    optional={
        "model": mostly(st.sampled_from(["offline/echo", "fuzz/priced", ""]), json_values),
        "instructions": mostly(texts, json_values),
        "tools": mostly(st.lists(function_tool, max_size=3), json_values),
        "tool_choice": mostly(
            st.sampled_from(["auto", "none", "required", {"type": "function", "name": "search"}]),
            json_values,
        ),
        "max_output_tokens": mostly(
            st.integers(min_value=1, max_value=4000),
            st.sampled_from([0, -1, 10**30, 100_001]) | json_values,
        ),
        "temperature": mostly(st.floats(0, 2), json_values),
        "stream": mostly(st.booleans(), json_values),
        "store": mostly(st.booleans(), json_values),
        "metadata": mostly(st.dictionaries(st.text(max_size=8), any_text, max_size=3), json_values),
        "text": mostly(st.fixed_dictionaries({"format": answer_format}), json_values),
        "previous_response_id": st.none() | st.just("resp_1") | json_values,
        "parallel_tool_calls": mostly(st.booleans(), json_values),
    },
)
bodies = st.one_of(
    responses_requests.map(_body),
    responses_requests.map(_body),
    json_values.map(_body),
    raw_bodies,
)


def _assert_well_answered(answer: asgi_driver.Client) -> None:
    assert answer.finished, "the answer was never ended"
    assert answer.status < 500, answer.body[:500]
    content_type = answer.headers["content-type"]
    if answer.status >= 400:
        error = answer.error()
        assert isinstance(error["message"], str)
        assert error["message"]
        assert isinstance(error["type"], str)
        assert "code" in error
    elif content_type == "text/event-stream":
        events = [_event(part) for part in answer.body.decode().split("\n\n") if part]
        assert [event["sequence_number"] for event in events] == list(range(len(events)))
        assert events[0]["type"] == "response.created"
        assert events[-1]["type"] in LAST_EVENTS, events[-1]
        if events[-1]["type"] == "response.failed":
            # An upstream's failure, never the gateway's own.
            assert events[-1]["response"]["error"]["message"] != GATEWAY_FAILED
    else:
        assert content_type == "application/json"
        response = loads_exact(answer.body)
        assert response["object"] == "response"
        assert response["id"].startswith("resp_")


def _event(text: str) -> dict[str, Any]:
    kind, data = text.split("\n", 1)
    event = loads_exact(data.removeprefix("data: "))
    assert kind == f"event: {event['type']}"
    assert isinstance(event, dict)
    return event


def _streamed(body: bytes) -> bool:
    try:
        parsed = loads_exact(body)
    except (ValueError, RecursionError):
        return False
    return isinstance(parsed, dict) and parsed.get("stream") is True


@given(data=st.data(), body=bodies, query=query_strings)
def test_responses_never_fails_and_leaves_the_books_whole(
    service_key: str, data: st.DataObject, body: bytes, query: bytes
) -> None:
    sent_headers = data.draw(headers(service_key))
    endpoint = RESPONSES_STREAMED if _streamed(body) else RESPONSES
    answer = _send(endpoint, "POST", RESPONSES_URL, sent_headers, body, query)
    _assert_well_answered(answer)
    _assert_books_whole()


@given(data=st.data(), request=responses_requests)
def test_a_streamed_response_always_ends_with_its_last_event_or_a_json_error(
    service_key: str, data: st.DataObject, request: dict[str, Any]
) -> None:
    sent_headers = data.draw(headers(service_key))
    answer = _send(
        RESPONSES_STREAMED, "POST", RESPONSES_URL, sent_headers, _body({**request, "stream": True})
    )
    _assert_well_answered(answer)
    _assert_books_whole()


well_formed_items = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {
                "role": st.sampled_from(["user", "system", "developer", "assistant"]),
                "content": texts.filter(lambda text: "\x00" not in text),
            }
        ),
        st.fixed_dictionaries(
            {
                "type": st.just("function_call"),
                "call_id": st.just("call_1"),
                "name": st.sampled_from(["search", "lookup"]),
                "arguments": any_text,
            }
        ),
        st.fixed_dictionaries(
            {
                "type": st.just("function_call_output"),
                "call_id": st.just("call_1"),
                "output": any_text,
            }
        ),
    ),
    min_size=1,
    max_size=4,
)
well_formed_requests = st.fixed_dictionaries(
    {"input": any_text | well_formed_items},
    optional={
        "model": any_text,
        "instructions": any_text,
        "tools": st.lists(
            st.fixed_dictionaries(
                {"type": st.just("function"), "name": st.sampled_from(["search", "lookup"])},
                optional={"parameters": st.just({"type": "object", "properties": {}})},
            ),
            max_size=2,
        ),
        "max_output_tokens": st.integers(min_value=1, max_value=40_000),
        "temperature": st.decimals(min_value=0, max_value=2, places=2),
        "stream": st.booleans(),
        "store": st.booleans(),
    },
)


@given(request=well_formed_requests, operation=st.sampled_from(OPERATIONS))
def test_well_formed_responses_are_answered_and_recorded(
    service_key: str, request: dict[str, Any], operation: str
) -> None:
    sent_headers = {**asgi_driver.bearer(service_key), "X-Operation": operation}
    endpoint = RESPONSES_STREAMED if request.get("stream") else RESPONSES
    answer = _send(endpoint, "POST", RESPONSES_URL, sent_headers, _body(request))
    _assert_well_answered(answer)
    # Refusals are the call path's own; nothing well-formed is refused as malformed.
    if answer.status >= 400:
        assert answer.error()["code"] in {
            "context_length_exceeded",
            "approval_required",
            "budget_exceeded",
            "not_routable",
        }, answer.error()
    _assert_books_whole()
