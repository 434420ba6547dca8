"""The Anthropic provider (Anthropic's native Messages API) against a local fake of it
(`AnthropicServer`): what it sends, what it reads back, its failures, and chat calls
through the gateway routed to it, prompt caching priced at the catalog's cache prices.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from controlplane.money import dumps_exact, loads_exact
from routing.models import AIModel, OperationLog, Provider, Route, RouteFallback
from routing.providers import (
    AnthropicProvider,
    ChatRequest,
    Completion,
    ProviderError,
    StreamChunk,
    provider_for,
)
from routing.providers.anthropic_format import DEFAULT_MAX_TOKENS
from tests.routing.anthropic_server import AnthropicServer, Failure, Message, usage
from tests.routing.openai_server import Answer, OpenAIServer
from tests.routing.test_gateway import sse_text

pytestmark = pytest.mark.django_db

KEY = "sk-ant-test-secret"
HELLO = [{"role": "user", "content": "Hello there"}]
PRICES = {
    "price_prompt": Decimal("0.000003"),
    "price_completion": Decimal("0.000015"),
    "price_cache_read": Decimal("0.0000003"),
    "price_cache_write": Decimal("0.00000375"),
}
Committed = Callable[[], AbstractContextManager[Any]]


@pytest.fixture
def anthropic() -> Iterator[AnthropicServer]:
    with AnthropicServer() as server:
        yield server


def client_of(server: AnthropicServer) -> AnthropicProvider:
    return AnthropicProvider(server.url, KEY, timeout=5, label="claude")


def request(**fields: Any) -> ChatRequest:
    return ChatRequest(**{"model": "claude-test", "messages": HELLO, **fields})


# -- what is sent -------------------------------------------------------------------------


def test_it_sends_the_key_the_version_and_a_messages_request(anthropic: AnthropicServer) -> None:
    client_of(anthropic).complete(request())

    sent = anthropic.requests[0]
    assert (sent.path, sent.headers["x-api-key"], sent.headers["anthropic-version"]) == (
        "/v1/messages",
        KEY,
        "2023-06-01",
    )
    assert "authorization" not in sent.headers
    assert sent.json == {
        "model": "claude-test",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello there"}]}],
        "max_tokens": DEFAULT_MAX_TOKENS,
    }


def test_a_catalog_provider_of_kind_anthropic_gets_the_anthropic_client() -> None:
    provider = Provider.objects.create(
        name="claude", kind=Provider.Kind.ANTHROPIC, base_url="https://api.anthropic.com"
    )

    client = provider_for(provider)

    assert isinstance(client, AnthropicProvider)
    assert client.url == "https://api.anthropic.com/v1/messages"
    assert client.label == "claude"


def test_a_base_url_ending_in_v1_is_not_doubled(anthropic: AnthropicServer) -> None:
    AnthropicProvider(f"{anthropic.url}/v1", KEY).complete(request())

    assert anthropic.requests[0].path == "/v1/messages"


def test_a_chat_conversation_becomes_anthropic_turns_with_cache_markers_restored(
    anthropic: AnthropicServer,
) -> None:
    cached = {"type": "ephemeral"}
    messages = [
        {
            "role": "system",
            "content": [{"type": "text", "text": "Be brief.", "cache_control": cached}],
        },
        {"role": "developer", "content": "Answer in English."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q": "cat"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "A cat."},
        {"role": "user", "content": "Thanks"},
    ]
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Look it up",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        }
    ]
    extra = {"tool_choice": "required", "stop": "END", "temperature": 0.5, "user": "u-1", "n": 1}

    client_of(anthropic).complete(
        request(messages=messages, tools=tools, max_tokens=300, extra=extra)
    )

    sent = anthropic.requests[0].json
    assert sent["system"] == [
        {"type": "text", "text": "Be brief.", "cache_control": cached},
        {"type": "text", "text": "Answer in English."},
    ]
    assert sent["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this image?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                },
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "cat"}}
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "A cat."},
                {"type": "text", "text": "Thanks"},
            ],
        },
    ]
    assert sent["tools"] == [
        {
            "name": "lookup",
            "description": "Look it up",
            "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
        }
    ]
    assert sent["tool_choice"] == {"type": "any"}
    assert (sent["max_tokens"], sent["stop_sequences"], sent["temperature"]) == (300, ["END"], 0.5)
    assert sent["metadata"] == {"user_id": "u-1"}
    assert "n" not in sent  # Anthropic refuses fields it does not know


def test_an_audio_part_is_refused_before_sending_so_a_fallback_may_take_it(
    anthropic: AnthropicServer,
) -> None:
    audio = [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAA"}}]}]

    with pytest.raises(ProviderError) as refused:
        client_of(anthropic).complete(request(messages=audio))

    assert (refused.value.code, refused.value.retryable) == ("unsupported_content", True)
    assert anthropic.requests == []


# -- what comes back ----------------------------------------------------------------------


def test_an_answer_with_a_tool_call_and_cached_tokens(anthropic: AnthropicServer) -> None:
    anthropic.reply(
        Message(
            "Let me look.",
            tool_uses=(("lookup", {"q": "cat"}),),
            usage=usage(100, 50, cache_read=1000, cache_write=200),
        )
    )

    completion = client_of(anthropic).complete(request())

    assert completion.content == "Let me look."
    assert [(c.id, c.name, json.loads(c.arguments)) for c in completion.tool_calls] == [
        ("toolu_test_0", "lookup", {"q": "cat"})
    ]
    assert completion.finish_reason == "tool_calls"
    assert (completion.model, completion.response_id) == ("claude-test", "msg_test_1")
    found = completion.usage
    assert (found.prompt_tokens, found.completion_tokens) == (1300, 50)
    assert (found.cached_tokens, found.cache_write_tokens) == (1000, 200)
    assert completion.raw is not None
    assert completion.raw["choices"][0]["native_finish_reason"] == "tool_use"
    assert completion.raw["usage"]["prompt_tokens_details"]["cached_tokens"] == 1000


def test_a_stop_sequence_met_is_named_in_the_answer(anthropic: AnthropicServer) -> None:
    anthropic.reply(Message("One two", stop_reason="stop_sequence", stop_sequence="END"))

    completion = client_of(anthropic).complete(request(extra={"stop": ["END"]}))

    assert completion.finish_reason == "stop"
    assert completion.raw is not None
    choice = completion.raw["choices"][0]
    assert (choice["native_finish_reason"], choice["stop_reason"]) == ("stop_sequence", "END")


def streamed(
    provider: AnthropicProvider, chat: ChatRequest
) -> tuple[list[StreamChunk], Completion]:
    items = list(provider.stream(chat))
    *chunks, final = items
    assert isinstance(final, Completion)
    assert all(isinstance(item, StreamChunk) for item in chunks)
    return [c for c in chunks if isinstance(c, StreamChunk)], final


def test_a_streamed_answer_comes_as_openai_chunks_then_the_whole_completion(
    anthropic: AnthropicServer,
) -> None:
    anthropic.reply(
        Message(
            "Streamed word by word.",
            tool_uses=(("lookup", {"q": "a long query"}),),
            usage=usage(20, 9, cache_read=500),
        )
    )

    chunks, completion = streamed(client_of(anthropic), request())

    assert "".join(c.content for c in chunks) == "Streamed word by word."
    arguments = "".join(
        d["function"].get("arguments", "") for c in chunks for d in c.tool_call_deltas
    )
    assert json.loads(arguments) == {"q": "a long query"}
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["tool_calls"]
    assert anthropic.requests[0].json["stream"] is True
    assert completion.content == "Streamed word by word."
    assert [(c.name, json.loads(c.arguments)) for c in completion.tool_calls] == [
        ("lookup", {"q": "a long query"})
    ]
    assert (completion.usage.prompt_tokens, completion.usage.cached_tokens) == (520, 500)
    assert completion.usage.completion_tokens == 9
    assert chunks[-1].raw is not None
    assert chunks[-1].raw["usage"]["prompt_tokens"] == 520


# -- failures -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "code", "retryable"),
    [
        (429, "rate_limit_error", "rate_limited", True),
        (529, "overloaded_error", "overloaded", True),
        (500, "api_error", "upstream_error", True),
        (400, "invalid_request_error", "bad_request", False),
        (401, "authentication_error", "unauthorized", False),
        (403, "permission_error", "forbidden", False),
        (404, "not_found_error", "model_not_found", True),
    ],
)
def test_an_error_status_says_whether_another_model_may_succeed(
    anthropic: AnthropicServer, status: int, kind: str, code: str, retryable: bool
) -> None:
    anthropic.reply(Failure(status, kind, f"went wrong for {KEY}", headers={"retry-after": "7"}))

    with pytest.raises(ProviderError) as failed:
        client_of(anthropic).complete(request())

    error = failed.value
    assert (error.status, error.code, error.retryable) == (status, code, retryable)
    assert KEY not in str(error)
    assert "[redacted]" in str(error)
    assert error.retry_after == (7 if status in (429, 529, 500) else None)


def test_a_prompt_too_long_may_fit_a_larger_model(anthropic: AnthropicServer) -> None:
    anthropic.reply(Failure(400, "invalid_request_error", "prompt is too long: 300000 tokens"))

    with pytest.raises(ProviderError) as failed:
        client_of(anthropic).complete(request())

    assert (failed.value.code, failed.value.retryable) == ("context_length_exceeded", True)


def test_an_error_event_mid_stream_is_a_retryable_overload(anthropic: AnthropicServer) -> None:
    anthropic.reply(Message("one two three", error_after=4))

    with pytest.raises(ProviderError) as failed:
        list(client_of(anthropic).stream(request()))

    assert (failed.value.status, failed.value.code, failed.value.retryable) == (
        529,
        "overloaded",
        True,
    )


def test_a_stream_cut_before_message_stop_is_a_lost_connection(
    anthropic: AnthropicServer,
) -> None:
    anthropic.reply(Message("one two three", drop_after=5))

    with pytest.raises(ProviderError) as failed:
        list(client_of(anthropic).stream(request()))

    assert failed.value.code == "connection_lost"


# -- through the gateway's chat completions ------------------------------------------------


def claude(server: AnthropicServer, model_id: str = "claude-test", **prices: Decimal) -> AIModel:
    provider = Provider.objects.create(
        name="anthropic", kind=Provider.Kind.ANTHROPIC, base_url=server.url, api_key=KEY
    )
    return AIModel.objects.create(
        provider=provider,
        model_id=model_id,
        context_length=200_000,
        supports_tools=True,
        **{**PRICES, **prices},
    )


def route_chat(primary: AIModel, *fallbacks: AIModel) -> None:
    route = Route.objects.get(operation="chat")
    route.primary_model = primary
    route.save()
    for position, model in enumerate(fallbacks):
        RouteFallback.objects.create(route=route, model=model, position=position)


def post_chat(client: Client, raw_key: str, **fields: Any) -> Any:
    return client.post(
        "/v1/chat/completions",
        data=dumps_exact({"model": "claude-test", "messages": HELLO, **fields}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {raw_key}"},
    )


def test_a_chat_completion_through_claude_prices_cache_reads_and_writes_at_their_own_prices(
    client: Client, issued: Any, anthropic: AnthropicServer, committed: Committed
) -> None:
    with committed():
        route_chat(claude(anthropic))
    anthropic.reply(
        Message("Cached answer.", usage=usage(100, 50, cache_read=1000, cache_write=200))
    )

    response = post_chat(client, issued[1])

    assert response.status_code == 200
    body = loads_exact(response.content)
    assert body["choices"][0]["message"]["content"] == "Cached answer."
    assert body["usage"]["prompt_tokens"] == 1300
    expected = (
        100 * PRICES["price_prompt"]
        + 1000 * PRICES["price_cache_read"]
        + 200 * PRICES["price_cache_write"]
        + 50 * PRICES["price_completion"]
    )
    row = OperationLog.objects.get()
    assert (row.model_used, row.cost, row.cost_source) == ("claude-test", expected, "catalog")
    assert (row.prompt_tokens, row.cached_tokens, row.cache_write_tokens) == (1300, 1000, 200)
    assert Decimal(response["X-Cost-USD"]) == expected


def test_a_streamed_chat_completion_through_claude(
    client: Client, issued: Any, anthropic: AnthropicServer, committed: Committed
) -> None:
    with committed():
        route_chat(claude(anthropic))
    anthropic.reply(Message("Streamed through Claude.", usage=usage(10, 4, cache_read=90)))

    response = post_chat(client, issued[1], stream=True)

    assert response.status_code == 200
    text = sse_text(response)
    events = [
        loads_exact(b.removeprefix("data: "))
        for b in text.split("\n\n")
        if b and b != "data: [DONE]"
    ]
    content = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert content == "Streamed through Claude."
    assert events[-1]["usage"]["prompt_tokens_details"]["cached_tokens"] == 90
    assert text.endswith("data: [DONE]\n\n")
    row = OperationLog.objects.get()
    assert (row.status, row.stream, row.cached_tokens) == ("ok", True, 90)
    assert (
        row.cost
        == 10 * PRICES["price_prompt"]
        + 90 * PRICES["price_cache_read"]
        + 4 * PRICES["price_completion"]
    )


def test_an_overloaded_claude_falls_back_to_the_next_model(
    client: Client,
    issued: Any,
    anthropic: AnthropicServer,
    upstream: OpenAIServer,
    committed: Committed,
) -> None:
    other = Provider.objects.create(
        name="other", kind=Provider.Kind.COMPATIBLE, base_url=upstream.url
    )
    fallback = AIModel.objects.create(
        provider=other, model_id="acme/fallback", context_length=200_000, **PRICES
    )
    with committed():
        route_chat(claude(anthropic), fallback)
    anthropic.reply(Failure(529, "overloaded_error", "Overloaded"))
    upstream.reply(Answer("From the fallback."))

    response = post_chat(client, issued[1])

    assert response.status_code == 200
    assert loads_exact(response.content)["choices"][0]["message"]["content"] == "From the fallback."
    row = OperationLog.objects.get()
    assert [(a["model"], a["outcome"]) for a in row.attempts] == [
        ("claude-test", "error"),
        ("acme/fallback", "ok"),
    ]
    assert row.attempts[0]["status"] == 529


def test_a_refused_key_at_claude_is_not_retried_and_the_call_fails_with_502(
    client: Client, issued: Any, anthropic: AnthropicServer, committed: Committed
) -> None:
    with committed():
        route_chat(claude(anthropic))
    anthropic.reply(Failure(401, "authentication_error", "invalid x-api-key"))

    response = post_chat(client, issued[1])

    assert response.status_code == 502
    assert loads_exact(response.content)["error"]["code"] == "upstream_error"
    row = OperationLog.objects.get()
    assert (row.status, row.cost) == ("error", 0)
    assert len(anthropic.requests) == 1


# -- through the gateway's /v1/messages ------------------------------------------------------


def post_messages(client: Client, raw_key: str, **fields: Any) -> Any:
    body = {"model": "claude-test", "max_tokens": 100, "messages": HELLO, **fields}
    return client.post(
        "/v1/messages",
        data=dumps_exact(body),
        content_type="application/json",
        headers={"x-api-key": raw_key},
    )


def test_claude_meeting_a_stop_sequence_is_told_through_v1_messages(
    client: Client, issued: Any, anthropic: AnthropicServer, committed: Committed
) -> None:
    with committed():
        route_chat(claude(anthropic))
    anthropic.reply(
        Message("Up to", stop_reason="stop_sequence", stop_sequence="STOP"),
        Message("Up to", stop_reason="stop_sequence", stop_sequence="STOP"),
    )

    whole = loads_exact(post_messages(client, issued[1], stop_sequences=["END", "STOP"]).content)
    streamed = sse_text(
        post_messages(client, issued[1], stop_sequences=["END", "STOP"], stream=True)
    )

    assert (whole["stop_reason"], whole["stop_sequence"]) == ("stop_sequence", "STOP")
    assert anthropic.requests[0].json["stop_sequences"] == ["END", "STOP"]
    delta = next(
        json.loads(block.split("\ndata: ")[1])
        for block in streamed.split("\n\n")
        if block.startswith("event: message_delta")
    )
    assert delta["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "STOP"}


def test_a_tool_round_trip_through_v1_messages_reaches_claude_as_its_own_blocks(
    client: Client, issued: Any, anthropic: AnthropicServer, committed: Committed
) -> None:
    with committed():
        route_chat(claude(anthropic))
    tool = {"name": "lookup", "input_schema": {"type": "object", "properties": {}}}
    messages = [
        {"role": "user", "content": "Look it up"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_7", "name": "lookup", "input": {"q": 1}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_7", "content": "found"}],
        },
    ]

    response = post_messages(client, issued[1], messages=messages, tools=[tool])

    assert response.status_code == 200
    sent = anthropic.requests[0].json
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Look it up"}]},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_7", "name": "lookup", "input": {"q": 1}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_7", "content": "found"}],
        },
    ]
    assert sent["tools"] == [tool]
