"""`POST /v1/messages` (Anthropic's Messages API) through the gateway's ASGI
application, in the test's transaction: what a request becomes for the chat call,
the Message and stream events that come back, errors in Anthropic's shape, refusals
before anything is reserved. The `anthropic` package against a live daphne is in
test_gateway_anthropic_client.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from controlplane.approvals import decide_approval
from controlplane.models import Approval, FeatureToggle
from controlplane.money import dumps_exact, loads_exact
from routing.calls import CALLER_WENT_AWAY
from routing.models import (
    AIModel,
    Budget,
    BudgetDay,
    OperationLog,
    Provider,
    Reservation,
    Route,
    ServiceKey,
)
from routing.providers import CallTool, ProviderError, Reply, Usage
from tests.routing import asgi_driver
from tests.routing.openai_server import OpenAIServer, Stream, chunk, usage_chunk
from tests.routing.test_gateway import sse_text
from tests.scripted_providers import ScriptedProvider, use_scripted

pytestmark = pytest.mark.django_db

URL = "/v1/messages"
HELLO = [{"role": "user", "content": "Hello there"}]
Committed = Callable[[], AbstractContextManager[Any]]


@pytest.fixture
def raw_key() -> str:
    return ServiceKey.issue(name="billing worker", service="billing")[1]


def post(
    client: Client,
    body: Any,
    key: str | None,
    headers: dict[str, str] | None = None,
    *,
    auth: str = "x-api-key",
) -> Any:
    data = body if isinstance(body, str | bytes) else dumps_exact(body)
    sent = dict(headers or {})
    if key is not None:
        sent.update(
            {"x-api-key": key} if auth == "x-api-key" else {"Authorization": f"Bearer {key}"}
        )
    return client.post(URL, data=data, content_type="application/json", headers=sent)


def request(**fields: Any) -> dict[str, Any]:
    return {"model": "claude-any", "max_tokens": 200, "messages": HELLO, **fields}


def error_of(response: Any) -> dict[str, Any]:
    assert response["Content-Type"] == "application/json"
    body = loads_exact(response.content)
    assert body["type"] == "error"
    return body["error"]


def events_of(response: Any) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each server-sent event, checking both name the same type."""
    events = []
    for block in sse_text(response).split("\n\n"):
        if not block:
            continue
        name_line, data_line = block.split("\n")
        name, data = name_line.removeprefix("event: "), json.loads(data_line.removeprefix("data: "))
        assert data["type"] == name
        events.append((name, data))
    return events


def scripted(*turns: Any) -> Any:
    return use_scripted("offline", ScriptedProvider(list(turns)))


# -- the answer ---------------------------------------------------------------------------


def test_a_message_is_answered_as_an_anthropic_message(client: Client, raw_key: str) -> None:
    usage = Usage(prompt_tokens=30, completion_tokens=5, cached_tokens=20, cache_write_tokens=4)
    with scripted(Reply("Hello back.", usage=usage)):
        response = post(client, request(), raw_key)

    assert response.status_code == 200
    body = loads_exact(response.content)
    assert body == {
        "id": f"msg_{response['X-Request-Id']}",
        "type": "message",
        "role": "assistant",
        "model": "offline/echo",
        "content": [{"type": "text", "text": "Hello back."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 6,
            "output_tokens": 5,
            "cache_read_input_tokens": 20,
            "cache_creation_input_tokens": 4,
        },
    }
    row = OperationLog.objects.get()
    assert (row.operation, row.service, row.status) == ("chat", "billing", "ok")
    assert (row.prompt_tokens, row.cached_tokens, row.cache_write_tokens) == (30, 20, 4)


def test_bearer_auth_works_as_x_api_key_does(client: Client, raw_key: str) -> None:
    response = post(client, request(), raw_key, auth="bearer")

    assert response.status_code == 200
    assert loads_exact(response.content)["content"][0]["type"] == "text"


def test_a_tool_call_is_a_tool_use_block(client: Client, raw_key: str) -> None:
    with scripted(CallTool("lookup", {"q": "deploys"}, id="toolu_9")):
        response = post(client, request(tools=[LOOKUP]), raw_key)

    body = loads_exact(response.content)
    assert body["content"] == [
        {"type": "tool_use", "id": "toolu_9", "name": "lookup", "input": {"q": "deploys"}}
    ]
    assert body["stop_reason"] == "tool_use"


LOOKUP = {
    "name": "lookup",
    "description": "Look something up",
    "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
}


def test_the_request_becomes_a_chat_call_keeping_its_blocks_and_cache_markers(
    client: Client, raw_key: str
) -> None:
    cached = {"type": "ephemeral"}
    body = request(
        system=[{"type": "text", "text": "You are terse.", "cache_control": cached}],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Long shared context", "cache_control": cached},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
                    },
                    {
                        "type": "image",
                        "source": {"type": "url", "url": "https://example.com/a.png"},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Looking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "a"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "found"},
                    {"type": "text", "text": "And now?"},
                ],
            },
        ],
        tools=[LOOKUP],
        tool_choice={"type": "tool", "name": "lookup", "disable_parallel_tool_use": True},
        temperature=0.2,
        top_k=5,
        stop_sequences=["END"],
        metadata={"user_id": "customer-7"},
    )
    with scripted(Reply("ok")) as provider:
        assert post(client, body, raw_key).status_code == 200

    sent = provider.requests[0]
    assert sent.messages == [
        {
            "role": "system",
            "content": [{"type": "text", "text": "You are terse.", "cache_control": cached}],
        },
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Long shared context", "cache_control": cached},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Looking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q":"a"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "found"},
        {"role": "user", "content": [{"type": "text", "text": "And now?"}]},
    ]
    assert sent.tools == [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": LOOKUP["input_schema"],
                "description": "Look something up",
            },
        }
    ]
    assert sent.max_tokens == 200
    assert sent.extra == {
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "parallel_tool_calls": False,
        "temperature": Decimal("0.2"),
        "top_k": 5,
        "stop": ["END"],
        "user": "customer-7",
    }


def test_a_length_stop_is_max_tokens(client: Client, raw_key: str) -> None:
    with use_scripted("offline", _Truncating()):
        response = post(client, request(), raw_key)

    assert loads_exact(response.content)["stop_reason"] == "max_tokens"


class _Truncating:
    label = "truncating"

    def complete(self, chat: Any) -> Any:
        from routing.providers.offline import complete_answer

        completion = complete_answer(Reply("cut sh"), chat)
        completion.finish_reason = "length"
        completion.raw = None
        return completion

    def stream(self, chat: Any) -> Any:
        raise AssertionError("not streamed")


# -- the stream ---------------------------------------------------------------------------


def test_a_streamed_message_sends_anthropic_events_in_order(client: Client, raw_key: str) -> None:
    with scripted(
        Reply("Streamed back to you.", usage=Usage(prompt_tokens=9, completion_tokens=4))
    ):
        response = post(client, request(stream=True), raw_key)

    events = events_of(response)
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "ping"]
    assert names[2] == "content_block_start"
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    start = events[0][1]["message"]
    assert (start["id"], start["role"], start["content"]) == (
        f"msg_{response['X-Request-Id']}",
        "assistant",
        [],
    )
    text = "".join(data["delta"]["text"] for name, data in events if name == "content_block_delta")
    assert text == "Streamed back to you."
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 4
    assert delta["usage"]["input_tokens"] == 9
    row = OperationLog.objects.get()
    assert (row.status, row.stream) == ("ok", True)


def test_a_streamed_tool_call_is_a_tool_use_block_with_input_json_deltas(
    client: Client, raw_key: str
) -> None:
    arguments = {"q": "the deploy of last night", "limit": 3}
    with scripted(CallTool("lookup", arguments, id="toolu_5")):
        response = post(client, request(stream=True, tools=[LOOKUP]), raw_key)

    events = events_of(response)
    starts = [data for name, data in events if name == "content_block_start"]
    assert starts == [
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": "toolu_5", "name": "lookup", "input": {}},
        }
    ]
    partial = "".join(
        data["delta"]["partial_json"] for name, data in events if name == "content_block_delta"
    )
    assert json.loads(partial) == arguments
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_a_provider_failing_mid_stream_ends_it_with_an_error_event(
    client: Client, raw_key: str
) -> None:
    failure = ProviderError("upstream went away", retryable=False, code="connection_lost")
    with scripted(Reply("Half an answer", error_after=failure)):
        response = post(client, request(stream=True), raw_key)

    events = events_of(response)
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["type"] == "api_error"
    assert "upstream went away" in events[-1][1]["error"]["message"]
    row = OperationLog.objects.get()
    assert row.status == "error"


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        ([1, 2], None),
        ({"model": "m", "messages": HELLO}, "max_tokens"),
        ({"max_tokens": 10, "messages": HELLO}, "model"),
        (request(max_tokens=0), "max_tokens"),
        (request(max_tokens="10"), "max_tokens"),
        (request(messages=[]), "messages"),
        (request(messages=[{"role": "system", "content": "x"}]), "messages[0].role"),
        (request(messages=[{"role": "user"}]), "messages[0].content"),
        (
            request(messages=[{"role": "user", "content": [{"text": "x"}]}]),
            "messages[0].content[0].type",
        ),
        (
            request(messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]),
            "messages[0].content[0].text",
        ),
        (
            request(
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {
                                    "type": "base64",
                                    "media_type": "image/bmp",
                                    "data": "x",
                                },
                            }
                        ],
                    }
                ]
            ),
            "messages[0].content[0].source.media_type",
        ),
        (
            request(messages=[{"role": "user", "content": [{"type": "document", "source": {}}]}]),
            "messages[0].content[0].type",
        ),
        (
            request(
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "tool_use", "id": "a", "name": "b", "input": {}}],
                    }
                ]
            ),
            "messages[0].content[0].type",
        ),
        (request(system=5), "system"),
        (request(system=[{"type": "image"}]), "system[0].type"),
        (request(temperature=1.5), "temperature"),
        (request(tools=[{"name": "x"}]), "tools[0].input_schema"),
        (request(tools=[{"type": "web_search_20250305", "name": "web_search"}]), "tools[0].type"),
        (
            request(tool_choice={"type": "tool", "name": "missing"}, tools=[LOOKUP]),
            "tool_choice.name",
        ),
        (request(tool_choice={"type": "sometimes"}), "tool_choice.type"),
        (request(stop_sequences=["a", 1]), "stop_sequences[1]"),
        (request(stream="yes"), "stream"),
        (request(thinking={"type": "enabled", "budget_tokens": 1024}), "thinking"),
        (request(frequency_penalty=1), "frequency_penalty"),
        (request(messages=[{"role": "user", "content": "a\u0000b"}]), "messages[0].content"),
        (
            request(
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "x", "cache_control": {"type": "forever"}}
                        ],
                    }
                ]
            ),
            "messages[0].content[0].cache_control.type",
        ),
    ],
)
def test_bad_input_is_a_400_naming_the_field_before_anything_is_reserved(
    client: Client, raw_key: str, body: Any, param: str | None
) -> None:
    response = post(client, body, raw_key)

    assert response.status_code == 400
    error = error_of(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    if param is not None:
        assert param in error["message"]
    assert not Reservation.objects.exists()
    assert not OperationLog.objects.exists()


def test_no_key_or_a_wrong_one_is_an_authentication_error(client: Client, raw_key: str) -> None:
    for key in (None, "cpk_wrong"):
        response = post(client, request(), key)
        assert response.status_code == 401
        assert error_of(response)["type"] == "authentication_error"
    assert not OperationLog.objects.exists()


def test_a_wrong_method_and_a_body_too_large_answer_in_anthropic_shape(
    client: Client, raw_key: str, settings: Any
) -> None:
    wrong = client.get(URL, headers={"x-api-key": raw_key})
    assert wrong.status_code == 405
    assert error_of(wrong)["type"] == "invalid_request_error"
    assert wrong["Allow"] == "POST"

    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    large = post(client, request(system="x" * 200), raw_key)
    assert large.status_code == 413
    assert error_of(large)["type"] == "request_too_large"


def test_the_gateway_switched_off_is_a_503_api_error(client: Client, raw_key: str) -> None:
    FeatureToggle.objects.filter(key="gateway.enabled").update(enabled=False)

    response = post(client, request(), raw_key)

    assert response.status_code == 503
    error = error_of(response)
    assert (error["type"], error["code"]) == ("api_error", "feature_off")


def test_a_budget_refusal_is_a_rate_limit_error_naming_the_budget(
    client: Client, raw_key: str, committed: Committed
) -> None:
    upstream = Provider.objects.create(
        name="upstream", kind=Provider.Kind.COMPATIBLE, base_url="http://127.0.0.1:9"
    )
    priced = AIModel.objects.create(
        provider=upstream,
        model_id="acme/priced",
        price_prompt=Decimal("0.000001"),
        price_completion=Decimal("0.000002"),
        context_length=100_000,
    )
    with committed():
        route = Route.objects.get(operation="chat")
        route.primary_model = priced
        route.save()
        Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal(0))

    response = post(client, request(max_tokens=4000), raw_key)

    assert response.status_code == 429, response.content
    error = error_of(response)
    assert (error["type"], error["code"], error["budget"]) == (
        "rate_limit_error",
        "budget_exceeded",
        "global budget",
    )
    assert not Reservation.objects.exists()
    assert OperationLog.objects.get().status == "refused"


def test_an_approval_is_asked_for_then_honoured_through_x_approval_id(
    client: Client, raw_key: str, owner: Any, committed: Committed
) -> None:
    with committed():
        route = Route.objects.get(operation="chat")
        route.spends_money = True
        route.save()

    asked = post(client, request(), raw_key)

    assert asked.status_code == 403
    error = error_of(asked)
    assert (error["type"], error["code"]) == ("permission_error", "approval_required")
    with committed():
        decide_approval(Approval.objects.get(pk=error["approval_id"]), user=owner, approve=True)

    through = post(client, request(), raw_key, {"X-Approval-Id": str(error["approval_id"])})

    assert through.status_code == 200
    assert loads_exact(through.content)["type"] == "message"


def test_the_operation_and_mode_come_from_headers(client: Client, raw_key: str) -> None:
    response = post(client, request(), raw_key, {"X-Operation": "summarize", "X-Mode": "code"})

    assert response.status_code == 200
    row = OperationLog.objects.get()
    assert (row.operation, row.mode) == ("summarize", "code")


def test_every_model_failing_is_a_502_api_error(client: Client, raw_key: str) -> None:
    with scripted(ProviderError("down", retryable=False, code="bad_request")):
        response = post(client, request(), raw_key)

    assert response.status_code == 502
    error = error_of(response)
    assert (error["type"], error["code"]) == ("api_error", "upstream_error")


def test_a_top_level_cache_control_marks_the_last_text_of_the_request(
    client: Client, raw_key: str
) -> None:
    marker = {"type": "ephemeral", "ttl": "1h"}
    body = request(
        system="Shared instructions",
        messages=[
            {"role": "user", "content": "First question"},
            {"role": "assistant", "content": "First answer"},
            {"role": "user", "content": "Second question"},
        ],
        cache_control=marker,
        service_tier="auto",
        speed="standard",
        thinking={"type": "adaptive"},
    )
    with scripted(Reply("ok")) as provider:
        assert post(client, body, raw_key).status_code == 200

    sent = provider.requests[0].messages
    assert sent[-1] == {
        "role": "user",
        "content": [{"type": "text", "text": "Second question", "cache_control": marker}],
    }
    assert [m["content"] for m in sent[:-1]] == [
        "Shared instructions",
        "First question",
        "First answer",
    ]


def test_an_upstream_streaming_text_then_a_tool_call_in_pieces_gives_two_blocks(
    client: Client, raw_key: str, upstream: OpenAIServer, committed: Committed
) -> None:
    provider = Provider.objects.create(
        name="upstream", kind=Provider.Kind.COMPATIBLE, base_url=upstream.url
    )
    model = AIModel.objects.create(
        provider=provider,
        model_id="acme/tools",
        price_prompt=Decimal("0.000001"),
        price_completion=Decimal("0.000002"),
        context_length=100_000,
    )
    with committed():
        route = Route.objects.get(operation="chat")
        route.primary_model = model
        route.save()
    head = {"index": 0, "id": "call_1", "type": "function", "function": {"arguments": ""}}
    upstream.reply(
        Stream(
            (
                chunk("Let me check. "),
                chunk(tool_calls=[head]),  # the name comes after the id, in a later piece
                chunk(tool_calls=[{"index": 0, "function": {"name": "lookup"}}]),
                chunk(tool_calls=[{"index": 0, "function": {"arguments": {"q": "x"}}}]),
                chunk(finish_reason="tool_calls"),
                usage_chunk(10, 5),
            )
        )
    )

    response = post(client, request(stream=True, tools=[LOOKUP]), raw_key)

    events = events_of(response)
    starts = [data["content_block"] for name, data in events if name == "content_block_start"]
    assert starts == [
        {"type": "text", "text": ""},
        {"type": "tool_use", "id": "call_1", "name": "lookup", "input": {}},
    ]
    stops = [data["index"] for name, data in events if name == "content_block_stop"]
    assert stops == [0, 1]
    partial = "".join(
        data["delta"].get("partial_json", "")
        for name, data in events
        if name == "content_block_delta" and data["index"] == 1
    )
    assert json.loads(partial) == {"q": "x"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert events[-2][1]["usage"] == {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }


def test_a_client_that_leaves_mid_stream_closes_the_call_which_settles_and_logs(
    raw_key: str, budget: Budget, upstream: OpenAIServer, committed: Committed
) -> None:
    with committed():
        asgi_driver.route_chat_to(asgi_driver.compatible_model(upstream, "acme/slow"))
    upstream.reply(asgi_driver.slow_stream("acme/slow"))

    answer = asgi_driver.serve(
        asgi_driver.scope(URL, headers={"x-api-key": raw_key}),
        asgi_driver.body_of(request(stream=True)),
        leave_after=4,  # message_start, ping, the text block's start and first delta
    )

    assert answer.status == 200
    assert not answer.finished
    row = OperationLog.objects.get()
    assert (row.status, row.error, row.stream) == ("cancelled", CALLER_WENT_AWAY, True)
    reservation = Reservation.objects.get(request_id=row.request_id)
    assert reservation.status == Reservation.Status.SETTLED
    assert row.cost > 0  # what was generated is paid for
    ledger = BudgetDay.objects.get(budget=budget)
    assert (ledger.reserved, ledger.spent) == (0, row.cost)
