"""Fuzzing `/v1/messages` (Anthropic's Messages API) as test_gateway.py fuzzes chat
completions: any body and header gets an answer below 500, a 4xx carries an
Anthropic-style error (`{"type": "error", "error": {"type", "message"}}`), a stream
is Anthropic's events ending in `message_stop` or an `error` event, and afterwards
the books are whole.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.money import dumps_exact, loads_exact
from tests.fuzz.test_gateway import (
    OPERATIONS,
    _assert_books_whole,
    _body,
    _send,
    any_text,
    headers,
    json_values,
    mostly,
    raw_bodies,
    raw_key,
)
from tests.routing import asgi_driver

pytestmark = pytest.mark.django_db

__all__ = ["raw_key"]  # the fixture, from the chat fuzz suite

URL = "/v1/messages"
MESSAGES = "POST /v1/messages"
MESSAGES_STREAMED = "POST /v1/messages (stream)"
ERROR_TYPES = {
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
}

# -- what is sent ---------------------------------------------------------------------

cache_control = mostly(st.just({"type": "ephemeral"}), json_values)
text_block = st.fixed_dictionaries(
    {"type": st.just("text"), "text": mostly(any_text, json_values)},
    optional={"cache_control": cache_control},
)
image_block = st.fixed_dictionaries(
    {
        "type": st.just("image"),
        "source": mostly(
            st.fixed_dictionaries(
                {
                    "type": st.just("base64"),
                    "media_type": mostly(st.just("image/png"), json_values),
                    "data": mostly(st.just("iVBORw0KGgo="), json_values),
                }
            )
            | st.fixed_dictionaries(
                {
                    "type": st.just("url"),
                    "url": mostly(st.just("https://example.com/a.png"), json_values),
                }
            ),
            json_values,
        ),
    }
)
tool_use_block = st.fixed_dictionaries(
    {
        "type": st.just("tool_use"),
        "id": mostly(st.just("toolu_1"), json_values),
        "name": mostly(st.sampled_from(["search", "lookup"]), json_values),
        "input": mostly(st.just({"q": "logs"}), json_values),
    }
)
tool_result_block = st.fixed_dictionaries(
    {
        "type": st.just("tool_result"),
        "tool_use_id": mostly(st.just("toolu_1"), json_values),
    },
    optional={
        "content": mostly(any_text | st.lists(text_block, max_size=2), json_values),
        "is_error": mostly(st.booleans(), json_values),
    },
)
blocks = st.lists(
    mostly(st.one_of(text_block, image_block, tool_use_block, tool_result_block), json_values),
    max_size=3,
)
message = st.fixed_dictionaries(
    {
        "role": mostly(st.sampled_from(["user", "assistant"]), json_values),
        "content": mostly(
            st.sampled_from(["Hello", "please search the logs", "lookup the deploy"]) | blocks,
            json_values,
        ),
    }
)
tool = st.fixed_dictionaries(
    {
        "name": mostly(st.sampled_from(["search", "lookup"]), json_values),
        "input_schema": mostly(
            st.just({"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}),
            json_values,
        ),
    },
    optional={"description": json_values, "cache_control": cache_control},
)
tool_choice = st.fixed_dictionaries(
    {"type": mostly(st.sampled_from(["auto", "any", "none", "tool"]), json_values)},
    optional={
        "name": mostly(st.just("search"), json_values),
        "disable_parallel_tool_use": json_values,
    },
)
token_counts = mostly(
    st.integers(min_value=1, max_value=4000),
    st.sampled_from([0, 10**13, 10**30, 2**63, 100_001]) | json_values,
)
messages_requests = st.fixed_dictionaries(
    {
        "messages": mostly(
            st.lists(mostly(message, json_values), min_size=1, max_size=3), json_values
        ),
        "max_tokens": token_counts,
        "model": mostly(st.sampled_from(["claude-sonnet-4-5", "offline/echo"]), json_values),
    },
    optional={
        "system": mostly(any_text | st.lists(text_block, max_size=2), json_values),
        "tools": mostly(st.lists(mostly(tool, json_values), max_size=3), json_values),
        "tool_choice": mostly(tool_choice, json_values),
        "stream": mostly(st.booleans(), json_values),
        "temperature": mostly(st.floats(0, 1), json_values),
        "top_k": mostly(st.integers(0, 100), json_values),
        "stop_sequences": mostly(st.lists(any_text, max_size=2), json_values),
        "metadata": mostly(st.fixed_dictionaries({"user_id": any_text}), json_values),
        "cache_control": cache_control,
        "thinking": json_values,
    },
)
bodies = st.one_of(
    messages_requests.map(_body), messages_requests.map(_body), json_values.map(_body), raw_bodies
)


@st.composite
def message_headers(draw: st.DrawFn, raw_key: str) -> dict[str, str]:
    """The chat suite's headers, the key moved to `x-api-key` half the time."""
    sent = draw(headers(raw_key))
    authorization = sent.get("Authorization", "")
    if authorization.startswith("Bearer ") and draw(st.booleans(), label="x-api-key"):
        sent["x-api-key"] = sent.pop("Authorization").removeprefix("Bearer ")
    return sent


# -- what must come back --------------------------------------------------------------


def _assert_well_answered(answer: asgi_driver.Client) -> None:
    assert answer.finished, "the answer was never ended"
    assert answer.status < 500, answer.body[:500]
    content_type = answer.headers["content-type"]
    if answer.status >= 400:
        assert content_type == "application/json"
        body = loads_exact(answer.body)
        assert body["type"] == "error"
        assert body["error"]["type"] in ERROR_TYPES
        assert isinstance(body["error"]["message"], str)
        assert body["error"]["message"]
    elif content_type == "text/event-stream":
        events = [part for part in answer.body.decode().split("\n\n") if part]
        names = []
        for event in events:
            name_line, data_line = event.split("\n")
            name = name_line.removeprefix("event: ")
            assert loads_exact(data_line.removeprefix("data: "))["type"] == name
            names.append(name)
        assert names[0] == "message_start"
        assert names[-1] in ("message_stop", "error"), names[-3:]
    else:
        assert content_type == "application/json"
        body = loads_exact(answer.body)
        assert body["type"] == "message"
        assert isinstance(body["content"], list)


def _streamed(body: bytes) -> bool:
    try:
        parsed = loads_exact(body)
    except (ValueError, RecursionError):
        return False
    return isinstance(parsed, dict) and parsed.get("stream") is True


@given(data=st.data(), body=bodies)
def test_messages_never_fails_and_leaves_the_books_whole(
    raw_key: str, data: st.DataObject, body: bytes
) -> None:
    sent_headers = data.draw(message_headers(raw_key))
    endpoint = MESSAGES_STREAMED if _streamed(body) else MESSAGES
    answer = _send(endpoint, "POST", URL, sent_headers, body)
    _assert_well_answered(answer)
    _assert_books_whole()


@given(data=st.data(), request=messages_requests)
def test_a_streamed_message_always_ends_with_message_stop_or_an_error(
    raw_key: str, data: st.DataObject, request: dict[str, Any]
) -> None:
    sent_headers = data.draw(message_headers(raw_key))
    streamed = dumps_exact({**request, "stream": True}).encode()
    answer = _send(MESSAGES_STREAMED, "POST", URL, sent_headers, streamed)
    _assert_well_answered(answer)
    _assert_books_whole()


well_formed_requests = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["claude-sonnet-4-5", "offline/echo"]),
        "max_tokens": st.integers(min_value=1, max_value=40_000),
        "messages": st.lists(
            st.fixed_dictionaries(
                {
                    "role": st.sampled_from(["user", "assistant"]),
                    "content": any_text
                    | st.lists(
                        st.fixed_dictionaries({"type": st.just("text"), "text": any_text}),
                        min_size=1,
                        max_size=2,
                    ),
                }
            ),
            min_size=1,
            max_size=3,
        ),
    },
    optional={
        "system": any_text,
        "stream": st.booleans(),
        "tools": st.lists(
            st.fixed_dictionaries(
                {
                    "name": st.sampled_from(["search", "lookup"]),
                    "input_schema": st.just(
                        {"type": "object", "properties": {"q": {"type": "string"}}}
                    ),
                }
            ),
            max_size=2,
        ),
        "temperature": st.decimals(min_value=0, max_value=1, places=2),
    },
)


@given(
    request=well_formed_requests,
    operation=st.sampled_from(OPERATIONS),
    approval=st.none() | st.integers(min_value=1, max_value=50),
)
def test_well_formed_messages_are_answered_and_recorded(
    raw_key: str, request: dict[str, Any], operation: str, approval: int | None
) -> None:
    sent_headers = {"x-api-key": raw_key, "X-Operation": operation}
    if approval is not None:
        sent_headers["X-Approval-Id"] = str(approval)
    endpoint = MESSAGES_STREAMED if request.get("stream") else MESSAGES
    answer = _send(endpoint, "POST", URL, sent_headers, dumps_exact(request).encode())
    _assert_well_answered(answer)
    if answer.status >= 400:
        assert loads_exact(answer.body)["error"]["code"] in {
            "context_length_exceeded",
            "approval_required",
            "budget_exceeded",
            "not_routable",
        }, answer.body
    _assert_books_whole()
