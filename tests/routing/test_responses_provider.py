"""The OpenAI-compatible provider speaking the Responses API upstream (a route's
`api = responses`), against a real local server: the chat request as Responses input
items, the answer (whole or streamed) back as the same Completion and chunks a chat
server gives, failures classified the same way; and a route set to it, through the
call path and the gateway's chat completions."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from routing import calls
from routing.models import OperationLog, Provider, Route, UpstreamApi
from routing.providers import (
    ChatRequest,
    Completion,
    OpenAIResponsesProvider,
    ProviderError,
    StreamChunk,
    provider_for,
)
from tests.routing import factories
from tests.routing.gateway_client import GatewayClient
from tests.routing.openai_server import Answer, Failure, OpenAIServer, Stream

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
ROUND_TRIP: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "22 C"},
]


@pytest.fixture
def provider(upstream: OpenAIServer) -> OpenAIResponsesProvider:
    return OpenAIResponsesProvider(upstream.url, "sk-test", timeout=5, label="upstream")


def streamed(provider: OpenAIResponsesProvider, request: ChatRequest) -> list[Any]:
    return list(provider.stream(request))


def test_a_chat_request_is_sent_as_responses_input_items(
    provider: OpenAIResponsesProvider, upstream: OpenAIServer
) -> None:
    request = ChatRequest(
        model="acme/new",
        messages=ROUND_TRIP,
        tools=[WEATHER],
        max_tokens=300,
        extra={"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
    )

    provider.complete(request)

    sent = upstream.requests[0]
    assert sent.path == "/v1/responses"
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert sent.json == {
        "model": "acme/new",
        "input": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city": "Paris"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "22 C"},
        ],
        "store": False,
        "tools": [{"type": "function", **WEATHER["function"]}],
        "max_output_tokens": 300,
        "tool_choice": {"type": "function", "name": "get_weather"},
    }


def test_a_whole_answer_becomes_a_completion(
    provider: OpenAIResponsesProvider, upstream: OpenAIServer
) -> None:
    upstream.reply(Answer("Sunny in Paris.", cost="0.000123456789012345"))

    completion = provider.complete(ChatRequest(model="acme/new", messages=ROUND_TRIP))

    assert (completion.content, completion.finish_reason) == ("Sunny in Paris.", "stop")
    assert completion.tool_calls == []
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (12, 3)
    assert completion.usage.reported_cost == Decimal("0.000123456789012345")
    assert (completion.model, completion.response_id) == ("acme/new", "resp_test_1")
    assert completion.raw is None  # no Responses body passed through to a chat caller


def test_a_tool_call_answer_becomes_tool_calls(
    provider: OpenAIResponsesProvider, upstream: OpenAIServer
) -> None:
    upstream.reply(Answer("", tool_calls=(("get_weather", {"city": "Paris"}),)))

    completion = provider.complete(ChatRequest(model="acme/new", messages=ROUND_TRIP[:2]))

    assert completion.finish_reason == "tool_calls"
    [call] = completion.tool_calls
    assert (call.id, call.name, json.loads(call.arguments)) == (
        "call_test_0",
        "get_weather",
        {"city": "Paris"},
    )


def test_an_answer_cut_short_says_length(
    provider: OpenAIResponsesProvider, upstream: OpenAIServer
) -> None:
    upstream.reply(Answer("Cut", finish_reason="length"))

    completion = provider.complete(ChatRequest(model="acme/new", messages=ROUND_TRIP[:2]))

    assert completion.finish_reason == "length"


def test_a_streamed_answer_becomes_chat_chunks_then_the_completion(
    provider: OpenAIResponsesProvider, upstream: OpenAIServer
) -> None:
    upstream.reply(Answer("one two three", tool_calls=(("get_weather", {"city": "Paris"}),)))

    items = streamed(provider, ChatRequest(model="acme/new", messages=ROUND_TRIP[:2]))

    chunks, final = items[:-1], items[-1]
    assert all(isinstance(chunk, StreamChunk) for chunk in chunks)
    assert "".join(chunk.content for chunk in chunks) == "one two three"
    deltas = [delta for chunk in chunks for delta in chunk.tool_call_deltas]
    assert deltas[0] == {
        "index": 0,
        "id": "call_test_0",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    arguments = "".join(delta["function"]["arguments"] for delta in deltas)
    assert json.loads(arguments) == {"city": "Paris"}
    assert chunks[-1].finish_reason == "tool_calls"
    assert isinstance(final, Completion)
    assert final.content == "one two three"
    assert final.tool_calls[0].name == "get_weather"
    assert final.usage.completion_tokens == 3
    assert upstream.requests[0].json["stream"] is True


def test_a_failed_response_in_a_stream_is_a_provider_error(
    provider: OpenAIResponsesProvider, upstream: OpenAIServer
) -> None:
    failed = {
        "type": "response.failed",
        "response": {"status": "failed", "error": {"code": "server_error", "message": "boom"}},
    }
    upstream.reply(Stream(({"type": "response.created", "response": {}}, failed), done=False))

    with pytest.raises(ProviderError, match="boom") as failure:
        streamed(provider, ChatRequest(model="acme/new", messages=ROUND_TRIP[:2]))

    assert failure.value.retryable


def test_a_stream_that_ends_before_its_response_is_complete_is_a_lost_connection(
    provider: OpenAIResponsesProvider, upstream: OpenAIServer
) -> None:
    delta = {"type": "response.output_text.delta", "item_id": "msg_1", "delta": "Hal"}
    upstream.reply(Stream((delta,), done=False))

    with pytest.raises(ProviderError) as failure:
        streamed(provider, ChatRequest(model="acme/new", messages=ROUND_TRIP[:2]))

    assert failure.value.code == "connection_lost"


def test_http_failures_are_classified_as_for_chat(
    provider: OpenAIResponsesProvider, upstream: OpenAIServer
) -> None:
    upstream.reply(Failure(429, "slow down", headers={"Retry-After": "7"}), Failure(401, "no"))

    with pytest.raises(ProviderError) as limited:
        provider.complete(ChatRequest(model="acme/new", messages=ROUND_TRIP[:2]))
    with pytest.raises(ProviderError) as refused:
        streamed(provider, ChatRequest(model="acme/new", messages=ROUND_TRIP[:2]))

    assert (limited.value.code, limited.value.retry_after) == ("rate_limited", 7)
    assert (refused.value.code, refused.value.retryable) == ("unauthorized", False)
    assert "sk-test" not in str(refused.value)


# -- a route that speaks the Responses API ----------------------------------------------


@pytest.fixture
def responses_route(db: Any, upstream: OpenAIServer) -> Route:
    local = factories.provider(upstream)
    model = factories.model(local, "acme/new")
    return factories.route("digest-logs", model, api=UpstreamApi.RESPONSES)


def test_the_route_setting_picks_the_client(db: Any, upstream: OpenAIServer) -> None:
    local = factories.provider(upstream)

    assert type(provider_for(local)).__name__ == "OpenAICompatibleProvider"
    assert isinstance(provider_for(local, api=UpstreamApi.RESPONSES), OpenAIResponsesProvider)
    offline = Provider.objects.get(kind=Provider.Kind.OFFLINE)
    assert provider_for(offline, api=UpstreamApi.RESPONSES).label == "offline"


def test_a_call_on_such_a_route_goes_to_responses_and_is_priced_and_logged(
    responses_route: Route, upstream: OpenAIServer
) -> None:
    upstream.reply(Answer("Summarised.", usage={"prompt_tokens": 40, "completion_tokens": 2}))

    result = calls.complete(
        calls.CallContext("digest-logs"), [{"role": "user", "content": "Summarise it"}]
    )

    assert result.completion.content == "Summarised."
    assert upstream.requests[0].path == "/v1/responses"
    row = OperationLog.objects.get()
    assert row.cost == 40 * Decimal("0.000001") + 2 * Decimal("0.000002")
    assert (row.status, row.model_used) == ("ok", "acme/new")


def test_the_gateways_chat_completions_answer_in_chat_shape_from_such_a_route(
    responses_route: Route, upstream: OpenAIServer, issued: Any
) -> None:
    upstream.reply(Answer("", tool_calls=(("get_weather", {"city": "Paris"}),)))
    headers = {"HTTP_AUTHORIZATION": f"Bearer {issued[1]}", "HTTP_X_OPERATION": "digest-logs"}

    response = GatewayClient().post(
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "Weather?"}], "tools": [WEATHER]},
        content_type="application/json",
        **headers,
    )

    assert response.status_code == 200
    body = json.loads(response.content)
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    [call] = body["choices"][0]["message"]["tool_calls"]
    assert (call["id"], call["function"]["name"]) == ("call_test_0", "get_weather")
    assert upstream.requests[0].path == "/v1/responses"
