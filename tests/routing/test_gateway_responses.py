"""The official `openai` package's `responses.create` through the gateway's
`/v1/responses`, served by daphne (as test_gateway_openai_client.py does for chat).

Transactional: the gateway runs in a process of its own and sees only what is committed.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import openai
import pytest
from openai import OpenAI
from openai.types.responses import ResponseInputParam

from controlplane.approvals import decide_approval
from controlplane.models import Approval, FeatureToggle
from routing.models import Budget, OperationLog, Reservation, Route
from routing.providers import ChatRequest, OfflineProvider

# A daphne process of this module's own: its audit rows' content type ids are cached
# from this module's first approval, not from another suite's before a flush.
from tests.live_server import live_server_url  # noqa: F401  (the fixture)
from tests.routing.openai_server import Answer, OpenAIServer, Stream, chunk
from tests.routing.test_gateway_openai_client import (  # noqa: F401  (fixtures)
    _seeded,
    gateway,
    logged_call,
    raw_key,
    route_chat_to_upstream,
)

pytestmark = pytest.mark.django_db(transaction=True)

WEATHER_TOOL: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
    "strict": True,
}


@pytest.fixture
def api(request: pytest.FixtureRequest) -> OpenAI:
    """The `openai` package's client of the live gateway (the chat tests' `gateway`)."""
    client: OpenAI = request.getfixturevalue("gateway")
    return client


def catalog_cost(input_tokens: int, output_tokens: int) -> Decimal:
    """The price of `route_chat_to_upstream`'s model in the catalog."""
    return input_tokens * Decimal("0.000001") + output_tokens * Decimal("0.000002")


def test_a_response_through_the_gateway(api: OpenAI) -> None:
    response = api.responses.create(
        model="offline/echo", instructions="Be brief.", input="Hello from billing"
    )

    expected = OfflineProvider().complete(
        ChatRequest(
            model="offline/echo",
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hello from billing"},
            ],
        )
    )
    assert response.id.startswith("resp_")
    assert (response.object, response.status, response.model) == (
        "response",
        "completed",
        "offline/echo",
    )
    assert response.output_text == expected.content
    assert response.instructions == "Be brief."
    assert response.usage is not None
    assert response.usage.input_tokens == expected.usage.prompt_tokens
    assert response.usage.output_tokens == expected.usage.completion_tokens
    row = logged_call()
    assert (row.operation, row.service, row.status, row.stream) == ("chat", "billing", "ok", False)
    assert response.id == f"resp_{row.request_id}"


def test_its_cost_is_the_catalogs_price_of_its_tokens(api: OpenAI, upstream: OpenAIServer) -> None:
    route_chat_to_upstream(upstream)
    upstream.reply(Answer("Priced by the catalog, four tokens."))

    response = api.responses.create(model="acme/small", input="What does it cost?")

    assert response.output_text == "Priced by the catalog, four tokens."
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (12, 6)
    row = logged_call()
    assert row.cost == catalog_cost(12, 6)
    assert Decimal(str((response.usage.model_extra or {})["cost"])) == row.cost
    assert upstream.requests[0].path.endswith("/chat/completions")
    assert upstream.requests[0].json["messages"] == [
        {"role": "user", "content": "What does it cost?"}
    ]


def test_a_streamed_response_sends_the_responses_events(
    api: OpenAI, upstream: OpenAIServer
) -> None:
    route_chat_to_upstream(upstream)
    upstream.reply(Answer("Streamed in the Responses way."))

    events = list(api.responses.create(model="acme/small", input="Stream it", stream=True))

    assert [event.type for event in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 5,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == "Streamed in the Responses way."
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.output_text == "Streamed in the Responses way."
    assert completed.response.usage is not None
    assert completed.response.usage.output_tokens == 5
    row = logged_call()
    assert (row.status, row.stream) == ("ok", True)
    assert row.cost == catalog_cost(12, 5)
    assert completed.response.id == f"resp_{row.request_id}"


def test_a_tool_call_round_trip(api: OpenAI, upstream: OpenAIServer) -> None:
    route_chat_to_upstream(upstream)
    upstream.reply(
        Answer("", tool_calls=(("get_weather", {"city": "Paris"}),)),
        Answer("Sunny in Paris."),
    )
    conversation: ResponseInputParam = [{"role": "user", "content": "Weather in Paris?"}]

    asked = api.responses.create(model="acme/small", input=conversation, tools=[WEATHER_TOOL])

    [call] = asked.output
    assert call.type == "function_call"
    assert (call.name, call.call_id) == ("get_weather", "call_test_0")
    assert json.loads(call.arguments) == {"city": "Paris"}
    conversation += [
        {
            "type": "function_call",
            "call_id": call.call_id,
            "name": call.name,
            "arguments": call.arguments,
        },
        {"type": "function_call_output", "call_id": call.call_id, "output": "22 C, clear"},
    ]
    answered = api.responses.create(
        model="acme/small", input=conversation, tools=[WEATHER_TOOL], tool_choice="auto"
    )

    assert answered.output_text == "Sunny in Paris."
    first, second = (request.json for request in upstream.requests)
    assert first["tools"] == [
        {
            "type": "function",
            "function": {key: WEATHER_TOOL[key] for key in WEATHER_TOOL if key != "type"},
        }
    ]
    assert second["messages"][1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_test_0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": call.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_test_0", "content": "22 C, clear"},
    ]
    assert second["tool_choice"] == "auto"


def test_a_streamed_tool_call_sends_its_arguments_as_deltas(
    api: OpenAI, upstream: OpenAIServer
) -> None:
    route_chat_to_upstream(upstream)
    arguments = {"city": "Paris", "units": "metric"}
    upstream.reply(Answer("", tool_calls=(("get_weather", arguments),)))

    events = list(
        api.responses.create(
            model="acme/small", input="Weather?", tools=[WEATHER_TOOL], stream=True
        )
    )

    added = next(e for e in events if e.type == "response.output_item.added")
    assert added.item.type == "function_call"
    assert (added.item.name, added.item.call_id) == ("get_weather", "call_test_0")
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert len(deltas) > 1
    assert json.loads("".join(deltas)) == arguments
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert json.loads(done.arguments) == arguments
    completed = events[-1]
    assert completed.type == "response.completed"
    [call] = completed.response.output
    assert call.type == "function_call"
    assert json.loads(call.arguments) == arguments


def test_an_upstream_failing_mid_stream_ends_the_stream_with_response_failed(
    api: OpenAI, upstream: OpenAIServer
) -> None:
    route_chat_to_upstream(upstream)
    upstream.reply(Stream((chunk("Half an "), chunk("answer")), done=False, drop_after=2))

    events = list(api.responses.create(model="acme/small", input="Hello", stream=True))

    assert [e.type for e in events if e.type == "response.output_text.delta"] == [
        "response.output_text.delta"
    ] * 2
    failed = events[-1]
    assert failed.type == "response.failed"
    assert failed.response.status == "failed"
    assert failed.response.error is not None
    assert failed.response.error.code == "server_error"
    assert "Every model failed" in failed.response.error.message
    assert [e.sequence_number for e in events] == list(range(len(events)))
    row = logged_call()
    assert (row.status, row.stream) == ("error", True)
    assert row.cost > 0  # what was streamed is paid for


def test_a_budget_refuses_a_response_naming_the_budget(api: OpenAI, upstream: OpenAIServer) -> None:
    route_chat_to_upstream(upstream)
    Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal(0))

    with pytest.raises(openai.RateLimitError) as refused:
        api.responses.create(model="acme/small", input="Hello")
    with pytest.raises(openai.RateLimitError):
        api.responses.create(model="acme/small", input="Hello", stream=True)

    assert refused.value.code == "budget_exceeded"
    body: Any = refused.value.body
    assert body["budget"] == "global budget"
    assert upstream.requests == []
    assert [row.status for row in OperationLog.objects.all()] == ["refused", "refused"]


def test_an_approval_is_waited_on_then_named_in_a_header(api: OpenAI, owner: Any) -> None:
    route = Route.objects.get(operation="chat")
    route.spends_money = True
    route.save()

    with pytest.raises(openai.PermissionDeniedError) as asked:
        api.responses.create(model="offline/echo", input="Refund order 7")
    body: Any = asked.value.body
    assert asked.value.code == "approval_required"
    decide_approval(Approval.objects.get(pk=body["approval_id"]), user=owner, approve=True)

    response = api.responses.create(
        model="offline/echo",
        input="Refund order 7",
        extra_headers={"X-Approval-Id": str(body["approval_id"])},
    )

    assert response.status == "completed"
    assert response.output_text


def test_the_gateway_switched_off_refuses_a_response(api: OpenAI) -> None:
    FeatureToggle.objects.filter(key="gateway.enabled").update(enabled=False)

    with pytest.raises(openai.InternalServerError) as refused:
        api.responses.create(model="offline/echo", input="Hello")

    assert (refused.value.status_code, refused.value.code) == (503, "feature_off")


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"previous_response_id": "resp_123"}, "previous_response_id"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"background": True}, "background"),
        ({"input": []}, "input"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
        ({"input": [{"type": "function_call", "name": "f", "arguments": ""}]}, "input[0].call_id"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file"}]}]},
            "input[0].content[0].type",
        ),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
        ({"tool_choice": {"type": "function"}}, "tool_choice.name"),
    ],
)
def test_bad_input_is_refused_naming_the_field_before_anything_is_reserved(
    api: OpenAI, fields: dict[str, Any], param: str
) -> None:
    request: dict[str, Any] = {"model": "offline/echo", "input": "Hello", **fields}

    with pytest.raises(openai.BadRequestError) as refused:
        api.responses.create(**request)

    assert refused.value.status_code == 400
    assert refused.value.param == param, refused.value.message
    assert param.split("[")[0].split(".")[0] in refused.value.message
    assert not Reservation.objects.exists()
    assert not OperationLog.objects.exists()


def test_the_stateless_gateway_says_to_send_the_whole_input(api: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        api.responses.create(model="offline/echo", input="And then?", previous_response_id="resp_1")

    assert "send the whole conversation as `input`" in refused.value.message
