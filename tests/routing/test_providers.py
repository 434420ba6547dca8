"""The chat-completions client against a real local OpenAI-compatible server, and the
offline and scripted providers."""

from __future__ import annotations

import gc
import json
import logging
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings

from routing import calls
from routing.models import Provider
from routing.providers import (
    CallTool,
    ChatRequest,
    Completion,
    OfflineProvider,
    OpenAICompatibleProvider,
    ProviderError,
    Reply,
    StreamChunk,
    Usage,
    provider_for,
)
from tests.local_servers import closed_port
from tests.routing.openai_server import (
    Answer,
    Disconnect,
    Failure,
    OpenAIServer,
    Stream,
    chunk,
    usage_chunk,
)
from tests.scripted_providers import Delay, ScriptedProvider, ScriptExhaustedError, use_scripted

API_KEY = "sk-or-v1-THIS-IS-THE-SECRET-KEY-0123456789"
EXACT_COST = "0.000123456789012345"
HELLO = ChatRequest(model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])


@pytest.fixture
def server() -> Any:
    with OpenAIServer() as running:
        yield running


@pytest.fixture
def client(server: OpenAIServer) -> Any:
    provider = OpenAICompatibleProvider(server.url, API_KEY, timeout=5, label="local")
    yield provider
    provider.close()


def drain(items: Any) -> tuple[list[StreamChunk], Completion]:
    """The chunks of a stream and its final Completion, checking there is exactly one."""
    collected = list(items)
    assert isinstance(collected[-1], Completion)
    chunks = collected[:-1]
    assert all(isinstance(item, StreamChunk) for item in chunks)
    return chunks, collected[-1]


def stream_until_error(
    provider: Any, request: ChatRequest
) -> tuple[list[StreamChunk], ProviderError]:
    chunks: list[StreamChunk] = []

    def read() -> None:
        for item in provider.stream(request):
            assert isinstance(item, StreamChunk), "no Completion after a failure"
            chunks.append(item)

    with pytest.raises(ProviderError) as caught:
        read()
    return chunks, caught.value


# -- streaming --------------------------------------------------------------------------


def test_it_ignores_comment_lines_and_reads_the_final_usage_chunk(
    server: OpenAIServer, client: OpenAICompatibleProvider
) -> None:
    server.reply(
        Stream(
            (
                ": OPENROUTER PROCESSING",
                chunk("Hello", role="assistant"),
                ": OPENROUTER PROCESSING",
                chunk(" world"),
                chunk(finish_reason="stop"),
                usage_chunk(11, 2, cost=EXACT_COST, cached_tokens=3, reasoning_tokens=1),
            )
        )
    )

    chunks, completion = drain(client.stream(HELLO))

    assert "".join(c.content for c in chunks) == "Hello world"
    assert completion.content == "Hello world"
    assert completion.finish_reason == "stop"
    assert completion.usage == Usage(
        prompt_tokens=11,
        completion_tokens=2,
        cached_tokens=3,
        reasoning_tokens=1,
        reported_cost=Decimal(EXACT_COST),
    )
    assert completion.model == "test/model"
    assert completion.response_id == "gen-test-1"


def test_it_keeps_each_stream_event_raw_for_pass_through(
    server: OpenAIServer, client: OpenAICompatibleProvider
) -> None:
    events = (chunk("Hi", role="assistant"), chunk(finish_reason="stop"), usage_chunk(cost="1E-7"))
    server.reply(Stream(events))

    chunks, _ = drain(client.stream(HELLO))

    assert [c.raw for c in chunks] == list(events)
    assert chunks[-1].raw is not None
    assert str(chunks[-1].raw["usage"]["cost"]) == "1E-7"  # exact, not a float


def test_it_keeps_the_reported_cost_exact_to_the_last_digit_when_streaming(
    server: OpenAIServer, client: OpenAICompatibleProvider
) -> None:
    server.reply(Answer("A fine answer", cost=EXACT_COST))

    _, completion = drain(client.stream(HELLO))

    assert completion.usage.reported_cost == Decimal(EXACT_COST)
    assert str(completion.usage.reported_cost) == EXACT_COST


def test_it_leaves_the_reported_cost_unknown_when_the_provider_does_not_send_one(
    server: OpenAIServer, client: OpenAICompatibleProvider
) -> None:
    server.reply(Answer("No cost here"))

    _, completion = drain(client.stream(HELLO))

    assert completion.usage.reported_cost is None
    assert completion.usage.completion_tokens == 3


def test_it_accumulates_tool_call_deltas_into_complete_tool_calls(
    server: OpenAIServer, client: OpenAICompatibleProvider
) -> None:
    weather = {"city": "Paris", "units": "metric", "days": 3}
    server.reply(Answer("", tool_calls=(("get_weather", weather), ("get_time", {"tz": "UTC"}))))

    chunks, completion = drain(client.stream(HELLO))

    assert sum(len(c.tool_call_deltas) for c in chunks) > 4  # arguments came in pieces
    assert completion.finish_reason == "tool_calls"
    assert [(call.id, call.name) for call in completion.tool_calls] == [
        ("call_test_0", "get_weather"),
        ("call_test_1", "get_time"),
    ]
    assert json.loads(completion.tool_calls[0].arguments) == weather
    assert json.loads(completion.tool_calls[1].arguments) == {"tz": "UTC"}


def test_it_accumulates_tool_calls_from_servers_that_leave_out_the_index(
    server: OpenAIServer, client: OpenAICompatibleProvider
) -> None:
    server.reply(
        Stream(
            (
                chunk(tool_calls=[{"id": "a", "function": {"name": "one", "arguments": '{"x"'}}]),
                chunk(tool_calls=[{"function": {"arguments": ": 1}"}}]),
                chunk(tool_calls=[{"id": "b", "function": {"name": "two", "arguments": "{}"}}]),
                chunk(finish_reason="tool_calls"),
            )
        )
    )

    _, completion = drain(client.stream(HELLO))

    assert [(c.id, c.name, c.arguments) for c in completion.tool_calls] == [
        ("a", "one", '{"x": 1}'),
        ("b", "two", "{}"),
    ]


def test_it_raises_a_provider_error_for_an_error_inside_a_200_stream(
    server: OpenAIServer, client: OpenAICompatibleProvider
) -> None:
    error_event = {
        **chunk("", finish_reason="error"),
        "error": {"code": 502, "message": "Provider returned error: upstream overloaded"},
    }
    server.reply(Stream((chunk("Hel", role="assistant"), error_event)))

    chunks, error = stream_until_error(client, HELLO)

    assert [c.content for c in chunks] == ["Hel"]
    assert error.retryable
    assert error.code == "upstream_error"
    assert error.status == 502
    assert "upstream overloaded" in str(error)


def test_it_treats_a_mid_stream_error_with_a_text_code_as_retryable(
    server: OpenAIServer, client: OpenAICompatibleProvider
) -> None:
    error_event = {"error": {"code": "server_error", "message": "Provider disconnected"}}
    server.reply(Stream((chunk("Hel"), error_event)))

    _, error = stream_until_error(client, HELLO)

    assert (error.code, error.retryable, error.status) == ("upstream_error", True, None)
    assert "Provider disconnected" in str(error)


def test_it_raises_a_retryable_error_when_the_connection_drops_mid_stream(
    server: OpenAIServer, client: OpenAICompatibleProvider
) -> None:
    server.reply(Stream((chunk("Once "), chunk("upon "), chunk("a time")), drop_after=2))

    chunks, error = stream_until_error(client, HELLO)

    assert "".join(c.content for c in chunks) == "Once upon "
    assert error.retryable
    assert error.code == "connection_lost"
    assert "dropped" in str(error)


def test_it_raises_when_a_stream_ends_without_done_or_a_finish_reason(
    server: OpenAIServer, client: OpenAICompatibleProvider
) -> None:
    server.reply(Stream((chunk("Once "), chunk("upon")), done=False))

    _, error = stream_until_error(client, HELLO)

    assert (error.code, error.retryable) == ("connection_lost", True)


def test_it_posts_a_streaming_request_asking_for_usage(
    server: OpenAIServer, client: OpenAICompatibleProvider
) -> None:
    request = ChatRequest(
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": "Hi"}],
        extra={"temperature": Decimal("0.7"), "top_p": Decimal("1")},
    )

    drain(client.stream(request))

    received = server.requests[-1]
    assert (received.method, received.path) == ("POST", "/v1/chat/completions")
    assert received.headers["authorization"] == f"Bearer {API_KEY}"
    assert received.headers["accept"] == "text/event-stream"
    assert received.json["stream"] is True
    assert received.json["stream_options"] == {"include_usage": True}
    assert received.json["temperature"] == Decimal("0.7")
    assert received.json["top_p"] == 1


def test_it_keeps_the_connection_alive_between_calls(
    server: OpenAIServer, client: OpenAICompatibleProvider
) -> None:
    for _ in range(3):
        drain(client.stream(HELLO))
        client.complete(HELLO)

    assert len({received.client_port for received in server.requests}) == 1


# -- not streaming --------------------------------------------------------------------


def test_a_non_streamed_completion_keeps_the_raw_body_with_exact_numbers(
    server: OpenAIServer, client: OpenAICompatibleProvider
) -> None:
    server.reply(Answer("Bonjour", cost=EXACT_COST, model="openai/gpt-4o-mini-2024-07-18"))

    completion = client.complete(HELLO)

    assert completion.content == "Bonjour"
    assert completion.finish_reason == "stop"
    assert completion.model == "openai/gpt-4o-mini-2024-07-18"
    assert completion.usage.reported_cost == Decimal(EXACT_COST)
    assert completion.raw is not None
    assert completion.raw["usage"]["cost"] == Decimal(EXACT_COST)
    assert str(completion.raw["usage"]["cost"]) == EXACT_COST
    assert completion.raw["choices"][0]["message"] == {"role": "assistant", "content": "Bonjour"}
    assert server.requests[-1].json.get("stream") is None


def test_a_whole_answer_is_freed_as_soon_as_it_is_dropped(
    server: OpenAIServer, client: OpenAICompatibleProvider
) -> None:
    """Nothing of the call is left for the cyclic garbage collector, whose pauses would
    fall in the middle of later calls."""
    client.complete(HELLO)  # the connection is opened
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        client.complete(HELLO)
        gc.collect()
        left = [
            type(o).__qualname__
            for o in gc.garbage
            if type(o).__module__.split(".")[0] in {"httpx", "httpcore"}
        ]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()

    assert left == []


def test_a_non_streamed_completion_reads_tool_calls(
    server: OpenAIServer, client: OpenAICompatibleProvider
) -> None:
    server.reply(Answer("", tool_calls=(("search", {"query": "error rate"}),)))

    completion = client.complete(HELLO)

    assert completion.finish_reason == "tool_calls"
    assert completion.tool_calls[0].name == "search"
    assert json.loads(completion.tool_calls[0].arguments) == {"query": "error rate"}


# -- HTTP failures --------------------------------------------------------------------


def test_402_is_a_retryable_payment_required_error(
    server: OpenAIServer, client: OpenAICompatibleProvider
) -> None:
    server.reply(Failure(402, "Insufficient credits"))

    with pytest.raises(ProviderError) as caught:
        client.complete(HELLO)

    error = caught.value
    assert (error.status, error.code, error.retryable) == (402, "payment_required", True)
    assert "Insufficient credits" in str(error)


@pytest.mark.parametrize("streaming", [False, True])
def test_429_carries_the_retry_after_seconds(
    server: OpenAIServer, client: OpenAICompatibleProvider, streaming: bool
) -> None:
    server.reply(Failure(429, "Rate limit exceeded", headers={"Retry-After": "7"}))

    with pytest.raises(ProviderError) as caught:
        drain(client.stream(HELLO)) if streaming else client.complete(HELLO)

    error = caught.value
    assert (error.status, error.code, error.retryable) == (429, "rate_limited", True)
    assert error.retry_after == 7.0
    assert "retry after 7 s" in str(error)


@pytest.mark.parametrize(
    ("status", "message", "code", "retryable"),
    [
        (400, "messages: field required", "bad_request", False),
        (400, "foo/bar is not a valid model ID", "model_not_found", True),
        (400, "This model's maximum context length is 8192", "context_length_exceeded", True),
        (401, "No auth credentials found", "unauthorized", False),
        (403, "Input was flagged by moderation", "forbidden", False),
        (404, "The model `foo/bar` does not exist", "model_not_found", True),
        (422, "unprocessable", "bad_request", False),
        (500, "Internal error", "upstream_error", True),
        (503, "No instances available", "upstream_error", True),
    ],
)
def test_each_error_status_says_whether_a_fallback_may_help(
    server: OpenAIServer,
    client: OpenAICompatibleProvider,
    status: int,
    message: str,
    code: str,
    retryable: bool,
) -> None:
    server.reply(Failure(status, message))

    with pytest.raises(ProviderError) as caught:
        client.complete(HELLO)

    assert (caught.value.status, caught.value.code, caught.value.retryable) == (
        status,
        code,
        retryable,
    )


@pytest.mark.parametrize("streaming", [False, True])
def test_a_slow_server_is_a_retryable_timeout(server: OpenAIServer, streaming: bool) -> None:
    # The server answers only when it stops, after the test: a client that waited for
    # the answer would get "too late" (after a minute) instead of its timeout.
    server.reply(Answer("too late", delay=60))
    slow = OpenAICompatibleProvider(server.url, API_KEY, timeout=0.3, label="local")

    with pytest.raises(ProviderError) as caught:
        drain(slow.stream(HELLO)) if streaming else slow.complete(HELLO)

    assert (caught.value.code, caught.value.retryable) == ("timeout", True)
    assert "no answer within 0.3 s" in str(caught.value)


def test_a_connection_closed_without_an_answer_is_retryable(
    server: OpenAIServer, client: OpenAICompatibleProvider
) -> None:
    server.reply(Disconnect())

    with pytest.raises(ProviderError) as caught:
        client.complete(HELLO)

    assert (caught.value.code, caught.value.retryable) == ("connection_lost", True)


def test_a_refused_connection_is_retryable() -> None:
    nowhere = OpenAICompatibleProvider(f"http://127.0.0.1:{closed_port()}/v1", API_KEY)

    with pytest.raises(ProviderError) as caught:
        nowhere.complete(HELLO)

    assert (caught.value.code, caught.value.retryable) == ("connection_failed", True)


def test_a_200_body_holding_an_error_object_is_an_error(
    server: OpenAIServer, client: OpenAICompatibleProvider
) -> None:
    server.reply(Failure(200, "upstream said no"))

    with pytest.raises(ProviderError) as caught:
        client.complete(HELLO)

    assert caught.value.retryable
    assert "upstream said no" in str(caught.value)


def test_the_api_key_never_appears_in_errors_logs_or_repr(
    server: OpenAIServer, client: OpenAICompatibleProvider, caplog: pytest.LogCaptureFixture
) -> None:
    server.reply(Failure(401, f"Incorrect API key provided: {API_KEY}"))
    server.reply(Stream((chunk("x"), {"error": {"code": 500, "message": f"bad key {API_KEY}"}})))
    caplog.set_level(logging.DEBUG)

    with pytest.raises(ProviderError) as first:
        client.complete(HELLO)
    _, second = stream_until_error(client, HELLO)

    assert server.requests[0].headers["authorization"] == f"Bearer {API_KEY}"
    for text in (str(first.value), str(second), repr(client), caplog.text):
        assert API_KEY not in text
    assert "[redacted]" in str(first.value)


# -- the factory ----------------------------------------------------------------------


@pytest.mark.django_db
def test_provider_for_sends_openrouter_attribution_headers(server: OpenAIServer) -> None:
    openrouter = Provider.objects.create(
        name="or-local", kind=Provider.Kind.OPENROUTER, base_url=server.url, api_key=API_KEY
    )

    provider_for(openrouter).complete(HELLO)

    headers = server.requests[-1].headers
    assert headers["http-referer"] == settings.SITE_URL
    assert headers["x-title"] == "Control plane"
    assert headers["authorization"] == f"Bearer {API_KEY}"


@pytest.mark.django_db
def test_provider_for_reuses_a_client_until_its_settings_change(server: OpenAIServer) -> None:
    vllm = Provider.objects.create(name="vllm-local", kind=Provider.Kind.VLLM, base_url=server.url)

    first = provider_for(vllm)
    assert provider_for(Provider.objects.get(pk=vllm.pk)) is first
    vllm.timeout_seconds = 5
    vllm.save()
    second = provider_for(vllm)

    assert second is not first
    assert isinstance(second, OpenAICompatibleProvider)
    assert second.label == "vllm-local"
    second.complete(HELLO)
    assert "authorization" not in server.requests[-1].headers  # no key, no header
    assert "http-referer" not in server.requests[-1].headers


@pytest.mark.django_db
def test_provider_for_gives_the_offline_model_for_the_offline_kind() -> None:
    offline = Provider.objects.get(name="offline")  # from the seed catalog

    assert provider_for(offline).label == "offline"
    assert isinstance(provider_for(offline), OfflineProvider)


@pytest.mark.django_db
def test_provider_for_refuses_a_disabled_or_unconfigured_provider() -> None:
    disabled = Provider.objects.create(
        name="off", kind=Provider.Kind.OPENAI, base_url="http://127.0.0.1:9/v1", enabled=False
    )
    no_url = Provider.objects.create(name="no-url", kind=Provider.Kind.OLLAMA, base_url="")

    with pytest.raises(ProviderError, match="disabled") as caught:
        provider_for(disabled)
    assert caught.value.code == "provider_disabled"
    with pytest.raises(ProviderError, match="no base URL"):
        provider_for(no_url)


@pytest.mark.django_db
def test_use_scripted_stands_in_for_a_catalog_provider_until_the_block_ends() -> None:
    openrouter = Provider.objects.get(name="openrouter")
    scripted = ScriptedProvider([Reply("scripted answer")])

    with use_scripted("openrouter", scripted):
        assert calls.provider_for(openrouter).complete(HELLO).content == "scripted answer"

    assert calls.provider_for(openrouter) is not scripted
    assert calls.provider_for is provider_for
    assert scripted.requests == [HELLO]


# -- the offline model ----------------------------------------------------------------

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "minLength": 2},
                "units": {"type": "string", "enum": ["metric", "imperial"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "hourly": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "near": {
                    "type": "object",
                    "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
                    "required": ["lat", "lon"],
                },
                "note": {"type": ["string", "null"]},
                "optional": {"type": "string"},
            },
            "required": ["city", "units", "days", "hourly", "tags", "near", "note"],
        },
    },
}
SEARCH_TOOL = {
    "type": "function",
    "function": {
        "name": "search_logs",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}},
            "required": ["query"],
        },
    },
}


def conforms(value: Any, schema: dict[str, Any]) -> bool:
    """Enough of JSON Schema to check the offline model's arguments."""
    types = schema.get("type")
    allowed = types if isinstance(types, list) else [types] if types else []
    python_types = {
        "object": dict,
        "array": list,
        "string": str,
        "integer": int,
        "number": int | float,
        "boolean": bool,
        "null": type(None),
    }
    if allowed and not any(isinstance(value, python_types[t]) for t in allowed):
        return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    if isinstance(value, str) and len(value) < schema.get("minLength", 0):
        return False
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and not schema.get("minimum", value) <= value <= schema.get("maximum", value)
    ):
        return False
    if isinstance(value, list):
        return len(value) >= schema.get("minItems", 0) and all(
            conforms(item, schema.get("items", {})) for item in value
        )
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        return set(schema.get("required", [])) <= set(value) and all(
            conforms(item, properties.get(name, {})) for name, item in value.items()
        )
    return True


def test_the_offline_model_answers_the_same_messages_the_same_way() -> None:
    offline = OfflineProvider()
    request = ChatRequest(model="offline/echo", messages=[{"role": "user", "content": "Ping?"}])
    other = ChatRequest(model="offline/echo", messages=[{"role": "user", "content": "Pong?"}])

    first, again = offline.complete(request), offline.complete(request)
    _, streamed = drain(offline.stream(request))

    assert first.content == again.content == streamed.content
    assert "Ping?" in first.content
    assert offline.complete(other).content != first.content
    assert offline.label == "offline"


def test_the_offline_model_streams_its_reply_in_word_pieces() -> None:
    offline = OfflineProvider()
    request = ChatRequest(model="offline/echo", messages=[{"role": "user", "content": "Hello"}])

    chunks, completion = drain(offline.stream(request))

    pieces = [c.content for c in chunks if c.content]
    assert len(pieces) > 10
    assert "".join(pieces) == completion.content == offline.complete(request).content
    assert all(c.raw and c.raw["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-2].finish_reason == "stop"
    assert chunks[-1].raw is not None
    assert chunks[-1].raw["choices"] == []  # the usage chunk, as OpenRouter sends it
    assert Usage.from_openai(chunks[-1].raw["usage"]) == completion.usage


def test_the_offline_model_costs_nothing_and_counts_words() -> None:
    request = ChatRequest(
        model="offline/echo", messages=[{"role": "user", "content": "three little words"}]
    )

    completion = OfflineProvider().complete(request)

    assert completion.usage.reported_cost == Decimal(0)
    assert completion.usage.prompt_tokens == 3
    assert completion.usage.completion_tokens == len(completion.content.split())
    assert completion.raw is not None
    assert completion.raw["usage"]["cost"] == 0


@pytest.mark.parametrize("streaming", [False, True])
def test_the_offline_model_calls_a_tool_named_in_the_prompt(streaming: bool) -> None:
    request = ChatRequest(
        model="offline/echo",
        messages=[{"role": "user", "content": "Please use get_weather for Paris."}],
        tools=[SEARCH_TOOL, WEATHER_TOOL],
    )
    offline = OfflineProvider()

    completion = drain(offline.stream(request))[1] if streaming else offline.complete(request)

    assert completion.finish_reason == "tool_calls"
    assert completion.content == ""
    [call] = completion.tool_calls
    assert call.name == "get_weather"
    assert call.id.startswith("call_")
    arguments = json.loads(call.arguments)
    assert conforms(arguments, WEATHER_TOOL["function"]["parameters"])  # type: ignore[index]
    assert "Paris" in arguments["city"]
    assert "optional" not in arguments


def test_the_offline_model_calls_the_tool_named_first_and_ignores_unnamed_ones() -> None:
    offline = OfflineProvider()
    both = ChatRequest(
        model="offline/echo",
        messages=[{"role": "user", "content": "search_logs then GET_WEATHER"}],
        tools=[WEATHER_TOOL, SEARCH_TOOL],
    )
    neither = ChatRequest(
        model="offline/echo",
        messages=[{"role": "user", "content": "What is the weather?"}],
        tools=[WEATHER_TOOL, SEARCH_TOOL],
    )

    assert [c.name for c in offline.complete(both).tool_calls] == ["search_logs"]
    assert offline.complete(neither).tool_calls == []
    assert offline.complete(neither).finish_reason == "stop"


def test_the_offline_model_answers_with_the_tool_result_once_it_has_one() -> None:
    offline = OfflineProvider()
    asked = [{"role": "user", "content": "Run search_logs for timeouts"}]
    request = ChatRequest(model="offline/echo", messages=asked, tools=[SEARCH_TOOL])
    [call] = offline.complete(request).tool_calls
    after = ChatRequest(
        model="offline/echo",
        tools=[SEARCH_TOOL],
        messages=[
            *asked,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": "3 timeouts in worker-2"},
        ],
    )

    answer = offline.complete(after)

    assert answer.tool_calls == []
    assert answer.finish_reason == "stop"
    assert "search_logs" in answer.content
    assert "3 timeouts in worker-2" in answer.content


# -- scripted playback ----------------------------------------------------------------


def test_a_scripted_provider_plays_back_its_turns_in_order_and_records_requests() -> None:
    busy = ProviderError("busy", code="rate_limited", retry_after=3)
    scripted = ScriptedProvider(
        [
            CallTool("search_logs", {"query": "timeouts"}, id="call_1"),
            Reply("Found 3.", usage=Usage(100, 3), cost="0.0002"),
            busy,
        ]
    )
    requests = [
        ChatRequest(model="m", messages=[{"role": "user", "content": f"turn {n}"}])
        for n in range(4)
    ]

    first = scripted.complete(requests[0])
    _, second = drain(scripted.stream(requests[1]))
    with pytest.raises(ProviderError) as caught:
        scripted.complete(requests[2])
    with pytest.raises(ScriptExhaustedError):
        scripted.complete(requests[3])

    assert first.finish_reason == "tool_calls"
    assert (first.tool_calls[0].id, first.tool_calls[0].name) == ("call_1", "search_logs")
    assert json.loads(first.tool_calls[0].arguments) == {"query": "timeouts"}
    assert first.usage.reported_cost is None  # unscripted cost: priced from the catalog
    assert second.content == "Found 3."
    assert second.usage == Usage(100, 3, reported_cost=Decimal("0.0002"))
    assert caught.value is busy
    assert scripted.requests == requests
    assert scripted.remaining == 0


def test_a_scripted_delay_slows_the_next_call_or_times_it_out() -> None:
    waited: list[float] = []
    scripted = ScriptedProvider(
        [Delay(0.2), Reply("late"), Delay(5), Reply("never")], timeout=1, sleep=waited.append
    )

    assert scripted.complete(HELLO).content == "late"
    assert waited == [0.2]
    with pytest.raises(ProviderError) as caught:
        scripted.complete(HELLO)

    assert waited == [0.2, 1]  # its timeout, not the 5 s scripted
    assert caught.value.code == "timeout"


def test_a_scripted_reply_can_fail_after_streaming_its_text() -> None:
    lost = ProviderError("dropped", code="connection_lost")
    scripted = ScriptedProvider([Reply("partial answer", error_after=lost)])

    chunks, error = stream_until_error(scripted, HELLO)

    assert "".join(c.content for c in chunks) == "partial answer"
    assert error is lost
