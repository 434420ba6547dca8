"""The official `anthropic` package as a real client of the gateway's `/v1/messages`,
served by daphne: a service written against Anthropic's SDK routes through the
gateway by changing only its base URL.

The gateway runs in a daphne process of its own (`live_server_url`), so everything it
must see is committed: these tests are transactional.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from importlib import import_module
from typing import Any

import anthropic
import pytest
from anthropic import Anthropic
from anthropic.types import MessageParam, ToolParam
from django.apps import apps

from controlplane.approvals import decide_approval
from controlplane.models import Approval
from routing.models import (
    AIModel,
    Budget,
    OperationLog,
    Provider,
    Reservation,
    Route,
    ServiceKey,
)
from tests.controlplane.test_background import wait_for
from tests.routing.anthropic_server import AnthropicServer, Message, usage
from tests.routing.openai_server import Answer, OpenAIServer

pytestmark = pytest.mark.django_db(transaction=True)

SEED = import_module("routing.migrations.0002_seed_catalog_policies_routes")
HELLO: list[MessageParam] = [{"role": "user", "content": "Hello from billing"}]
LOOKUP: ToolParam = {
    "name": "lookup",
    "description": "Look up a deploy",
    "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
}
ASK_LOOKUP: list[MessageParam] = [{"role": "user", "content": "Please lookup the last deploy"}]
PROMPT_PRICE = Decimal("0.000003")
COMPLETION_PRICE = Decimal("0.000015")
CACHE_READ_PRICE = Decimal("0.0000003")
CACHE_WRITE_PRICE = Decimal("0.00000375")


@pytest.fixture(autouse=True)
def _seeded() -> None:
    SEED.seed(apps, None)


@pytest.fixture
def raw_key() -> str:
    return ServiceKey.issue(name="billing worker", service="billing")[1]


@pytest.fixture
def gateway(live_server_url: str, raw_key: str) -> Iterator[Anthropic]:
    client = Anthropic(base_url=live_server_url, api_key=raw_key, max_retries=0, timeout=30)
    yield client
    client.close()
    # A whole answer's row is written just after it is sent: wait for every one, so
    # that none lands in the next test's (flushed) database.
    wait_for(lambda: not Reservation.objects.filter(status=Reservation.Status.HELD).exists())


def logged_call(answer: Any) -> OperationLog:
    """The log row of the call that gave `answer` (the SDK keeps its `request-id`)."""
    rows = OperationLog.objects.filter(request_id=answer._request_id)
    wait_for(rows.exists)
    return rows.get()


def route_chat_to(model: AIModel) -> None:
    route = Route.objects.get(operation="chat")
    route.primary_model = model
    route.save()


def priced_model(provider: Provider, model_id: str) -> AIModel:
    return AIModel.objects.create(
        provider=provider,
        model_id=model_id,
        context_length=200_000,
        supports_tools=True,
        price_prompt=PROMPT_PRICE,
        price_completion=COMPLETION_PRICE,
        price_cache_read=CACHE_READ_PRICE,
        price_cache_write=CACHE_WRITE_PRICE,
    )


# -- answers ------------------------------------------------------------------------------


def test_a_message_through_the_gateway(gateway: Anthropic) -> None:
    message = gateway.messages.create(model="claude-sonnet-4-5", max_tokens=256, messages=HELLO)

    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == "offline/echo"
    assert message.content[0].type == "text"
    assert "Hello from billing" in message.content[0].text
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0
    row = logged_call(message)
    assert (row.operation, row.service, row.status, row.stream) == ("chat", "billing", "ok", False)


def test_a_tool_is_called_and_its_result_answered(gateway: Anthropic) -> None:
    asked = gateway.messages.create(
        model="claude-sonnet-4-5", max_tokens=256, messages=ASK_LOOKUP, tools=[LOOKUP]
    )

    assert asked.stop_reason == "tool_use"
    tool_use = asked.content[-1]
    assert tool_use.type == "tool_use"
    assert tool_use.name == "lookup"
    assert isinstance(tool_use.input, dict)
    assert isinstance(tool_use.input["q"], str)

    answered = gateway.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=256,
        tools=[LOOKUP],
        messages=[
            *ASK_LOOKUP,
            {"role": "assistant", "content": asked.content},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": tool_use.id, "content": "Deploy 42 ok"}
                ],
            },
        ],
    )

    assert answered.stop_reason == "end_turn"
    assert answered.content[0].type == "text"
    assert "Deploy 42 ok" in answered.content[0].text


def test_a_streamed_message_is_read_by_the_sdk_event_by_event(gateway: Anthropic) -> None:
    events = list(
        gateway.messages.create(
            model="claude-sonnet-4-5", max_tokens=256, messages=HELLO, stream=True
        )
    )

    kinds = [event.type for event in events]
    assert kinds[0] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    text = "".join(
        event.delta.text
        for event in events
        if event.type == "content_block_delta" and event.delta.type == "text_delta"
    )
    assert "Hello from billing" in text
    row = OperationLog.objects.get()  # written before the stream's end
    assert (row.status, row.stream) == ("ok", True)


def test_a_streamed_tool_call_accumulates_in_the_sdk_stream_helper(gateway: Anthropic) -> None:
    with gateway.messages.stream(
        model="claude-sonnet-4-5", max_tokens=256, messages=ASK_LOOKUP, tools=[LOOKUP]
    ) as stream:
        final = stream.get_final_message()

    assert final.stop_reason == "tool_use"
    tool_use = final.content[-1]
    assert tool_use.type == "tool_use"
    assert (tool_use.name, sorted(tool_use.input)) == ("lookup", ["q"])
    assert final.usage.output_tokens > 0


def test_the_key_may_come_as_x_api_key(gateway: Anthropic, raw_key: str) -> None:
    client = gateway.with_options(default_headers={"x-api-key": raw_key, "Authorization": "-"})

    message = client.messages.create(model="claude", max_tokens=64, messages=HELLO)

    assert message.type == "message"
    assert logged_call(message).service == "billing"


# -- cost ----------------------------------------------------------------------------------


def test_the_cost_in_the_log_is_the_catalog_price_of_an_upstream_answer(
    gateway: Anthropic, upstream: OpenAIServer
) -> None:
    provider = Provider.objects.create(
        name="upstream", kind=Provider.Kind.COMPATIBLE, base_url=upstream.url, timeout_seconds=10
    )
    route_chat_to(priced_model(provider, "acme/small"))
    upstream.reply(
        Answer(
            "From upstream.",
            usage={
                "prompt_tokens": 1200,
                "completion_tokens": 30,
                "prompt_tokens_details": {"cached_tokens": 1000},
            },
        )
    )

    message = gateway.messages.create(model="claude", max_tokens=256, messages=HELLO)

    assert message.content[0].type == "text"
    assert message.content[0].text == "From upstream."
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (200, 1000)
    row = logged_call(message)
    assert row.cost == 200 * PROMPT_PRICE + 1000 * CACHE_READ_PRICE + 30 * COMPLETION_PRICE
    assert row.cost_source == "catalog"


def test_claude_behind_the_gateway_gets_prompt_caching_priced_as_such(
    gateway: Anthropic,
) -> None:
    with AnthropicServer() as claude:
        provider = Provider.objects.create(
            name="claude", kind=Provider.Kind.ANTHROPIC, base_url=claude.url, api_key="sk-ant-x"
        )
        route_chat_to(priced_model(provider, "claude-test"))
        claude.reply(
            Message("Cached.", usage=usage(50, 20, cache_read=2000, cache_write=300)),
            Message("Cached, streamed.", usage=usage(50, 20, cache_read=2000)),
        )
        system: Any = [
            {"type": "text", "text": "A long shared prompt", "cache_control": {"type": "ephemeral"}}
        ]

        message = gateway.messages.create(
            model="claude-test", max_tokens=256, system=system, messages=HELLO
        )
        first = logged_call(message)
        with gateway.messages.stream(
            model="claude-test", max_tokens=256, system=system, messages=HELLO
        ) as stream:
            streamed = stream.get_final_message()
        second = OperationLog.objects.exclude(pk=first.pk).get()

        assert claude.requests[0].json["system"] == system  # the marker reached Claude
    assert message.usage.cache_read_input_tokens == 2000
    assert message.usage.cache_creation_input_tokens == 300
    assert message.usage.input_tokens == 50
    assert first.cost == (
        50 * PROMPT_PRICE
        + 2000 * CACHE_READ_PRICE
        + 300 * CACHE_WRITE_PRICE
        + 20 * COMPLETION_PRICE
    )
    assert streamed.content[0].type == "text"
    assert streamed.content[0].text == "Cached, streamed."
    assert (streamed.usage.input_tokens, streamed.usage.cache_read_input_tokens) == (50, 2000)
    assert second.cost == 50 * PROMPT_PRICE + 2000 * CACHE_READ_PRICE + 20 * COMPLETION_PRICE


# -- refusals --------------------------------------------------------------------------------


def test_a_revoked_key_raises_authentication_error(gateway: Anthropic) -> None:
    ServiceKey.objects.get().revoke()

    with pytest.raises(anthropic.AuthenticationError) as refused:
        gateway.messages.create(model="claude", max_tokens=64, messages=HELLO)
    with pytest.raises(anthropic.AuthenticationError):
        gateway.messages.create(model="claude", max_tokens=64, messages=HELLO, stream=True)

    assert refused.value.status_code == 401
    assert not OperationLog.objects.exists()


def test_a_budget_refusal_raises_rate_limit_error_naming_the_budget(
    gateway: Anthropic, upstream: OpenAIServer
) -> None:
    provider = Provider.objects.create(
        name="upstream", kind=Provider.Kind.COMPATIBLE, base_url=upstream.url
    )
    route_chat_to(priced_model(provider, "acme/small"))
    Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal(0))

    with pytest.raises(anthropic.RateLimitError) as refused:
        gateway.messages.create(model="claude", max_tokens=64, messages=HELLO)
    with pytest.raises(anthropic.RateLimitError):
        gateway.messages.create(model="claude", max_tokens=64, messages=HELLO, stream=True)

    body: Any = refused.value.body
    assert body["error"]["type"] == "rate_limit_error"
    assert body["error"]["budget"] == "global budget"
    assert upstream.requests == []
    assert [row.status for row in OperationLog.objects.all()] == ["refused", "refused"]


def test_an_approval_is_waited_on_and_named_in_a_header(gateway: Anthropic, owner: Any) -> None:
    route = Route.objects.get(operation="chat")
    route.spends_money = True
    route.save()

    with pytest.raises(anthropic.PermissionDeniedError) as asked:
        gateway.messages.create(model="claude", max_tokens=64, messages=HELLO)
    body: Any = asked.value.body
    assert body["error"]["code"] == "approval_required"
    decide_approval(Approval.objects.get(pk=body["error"]["approval_id"]), user=owner, approve=True)

    message = gateway.messages.create(
        model="claude",
        max_tokens=64,
        messages=HELLO,
        extra_headers={"X-Approval-Id": str(body["error"]["approval_id"])},
    )

    assert message.type == "message"


def test_bad_input_raises_bad_request_naming_the_field(gateway: Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as refused:
        gateway.messages.create(
            model="claude",
            max_tokens=64,
            messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            extra_body={"temperature": 3},
        )

    body: Any = refused.value.body
    assert (body["error"]["type"], body["error"]["param"]) == (
        "invalid_request_error",
        "temperature",
    )
    assert not OperationLog.objects.exists()
