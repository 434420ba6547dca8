"""The official `openai` package as a real client of the gateway, served by daphne.

The gateway runs in a daphne process of its own (`live_server_url`), so everything it
must see is committed: these tests are transactional.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from importlib import import_module
from typing import Any

import httpx
import openai
import pytest
from django.apps import apps
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from controlplane.approvals import decide_approval
from controlplane.models import Approval, FeatureToggle
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
from routing.providers import ChatRequest, OfflineProvider
from tests.controlplane.test_background import wait_for
from tests.routing.openai_server import Answer, OpenAIServer

pytestmark = pytest.mark.django_db(transaction=True)

SEED = import_module("routing.migrations.0002_seed_catalog_policies_routes")
UPSTREAM_COST = Decimal("0.000123456789012345")
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello from billing"}]


@pytest.fixture(autouse=True)
def _seeded() -> None:
    # The flush after an earlier transactional test removed what the migration seeded.
    SEED.seed(apps, None)


@pytest.fixture
def raw_key() -> str:
    return ServiceKey.issue(name="billing worker", service="billing")[1]


ANSWERED: list[str] = []
"""Request ids of the calls the gateway answered in the running test, newest last."""


def _note_request_id(response: httpx.Response) -> None:
    if request_id := response.headers.get("x-request-id"):
        ANSWERED.append(request_id)


@pytest.fixture
def gateway(live_server_url: str, raw_key: str) -> Iterator[OpenAI]:
    ANSWERED.clear()
    http_client = httpx.Client(event_hooks={"response": [_note_request_id]})
    client = OpenAI(
        base_url=f"{live_server_url}/v1",
        api_key=raw_key,
        max_retries=0,
        timeout=30,
        http_client=http_client,
    )
    yield client
    client.close()
    # Each answered call's row is written by the server just after the answer: wait for
    # them all, so that none lands in the next test's (flushed) database.
    for request_id in ANSWERED:
        logged_call(request_id)


def offline_reply() -> str:
    request = ChatRequest(model="offline/echo", messages=[dict(m) for m in HELLO])
    return OfflineProvider().complete(request).content


def route_chat_to_upstream(server: OpenAIServer, model_id: str = "acme/small") -> AIModel:
    provider = Provider.objects.create(
        name="upstream", kind=Provider.Kind.COMPATIBLE, base_url=server.url, timeout_seconds=10
    )
    model = AIModel.objects.create(
        provider=provider,
        model_id=model_id,
        context_length=128_000,
        price_prompt=Decimal("0.000001"),
        price_completion=Decimal("0.000002"),
    )
    route = Route.objects.get(operation="chat")
    route.primary_model = model
    route.save()
    return model


def logged_call(request_id: str | None = None) -> OperationLog:
    """The log row of a call (by default the last one answered). A whole answer is sent
    before its row is written (at once after, in the server process), so the row may
    be a moment behind the answer."""
    rows = OperationLog.objects.filter(request_id=request_id or ANSWERED[-1])
    wait_for(rows.exists)
    return rows.get()


def test_a_completion_through_the_gateway(gateway: OpenAI) -> None:
    completion = gateway.chat.completions.create(model="offline/echo", messages=HELLO)

    assert completion.choices[0].message.content == offline_reply()
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "offline/echo"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens > 0
    row = logged_call()
    assert (row.operation, row.service, row.status, row.stream) == ("chat", "billing", "ok", False)


def test_a_streamed_completion_through_the_gateway(gateway: OpenAI) -> None:
    stream = gateway.chat.completions.create(model="offline/echo", messages=HELLO, stream=True)

    chunks = list(stream)

    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == offline_reply()
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    row = OperationLog.objects.get()
    assert (row.status, row.stream, row.service) == ("ok", True, "billing")


def test_a_streamed_completion_from_an_upstream_provider_through_the_gateway(
    gateway: OpenAI, upstream: OpenAIServer
) -> None:
    route_chat_to_upstream(upstream)
    upstream.reply(Answer("Streamed from upstream, word by word.", cost=UPSTREAM_COST))

    stream = gateway.chat.completions.create(model="acme/small", messages=HELLO, stream=True)
    chunks = list(stream)

    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == "Streamed from upstream, word by word."
    assert {chunk.model for chunk in chunks} == {"acme/small"}
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.model_extra or {})["cost"] == pytest.approx(float(UPSTREAM_COST))
    assert upstream.requests[0].json["stream"] is True
    row = OperationLog.objects.get()
    assert row.cost == UPSTREAM_COST
    assert (row.model_used, row.stream, row.status) == ("acme/small", True, "ok")


def test_a_completion_from_an_upstream_provider_through_the_gateway(
    gateway: OpenAI, upstream: OpenAIServer
) -> None:
    route_chat_to_upstream(upstream)
    upstream.reply(Answer("Answered upstream.", cost=UPSTREAM_COST))

    completion = gateway.chat.completions.create(model="acme/small", messages=HELLO)

    assert completion.choices[0].message.content == "Answered upstream."
    assert completion.id == "gen-test-1"
    assert logged_call().cost == UPSTREAM_COST


def test_models_are_listed_through_the_gateway(gateway: OpenAI) -> None:
    models = list(gateway.models.list())

    active = AIModel.objects.filter(active=True, provider__enabled=True)
    assert sorted(model.id for model in models) == sorted(active.values_list("model_id", flat=True))
    assert "offline/echo" in {model.id for model in models}


def test_another_operation_is_named_with_a_header(gateway: OpenAI) -> None:
    gateway.chat.completions.create(
        model="offline/echo", messages=HELLO, extra_headers={"X-Operation": "summarize"}
    )

    assert logged_call().operation == "summarize"


def test_a_revoked_key_raises_authentication_error(gateway: OpenAI) -> None:
    ServiceKey.objects.get().revoke()

    with pytest.raises(openai.AuthenticationError) as refused:
        gateway.chat.completions.create(model="offline/echo", messages=HELLO)
    with pytest.raises(openai.AuthenticationError):
        gateway.chat.completions.create(model="offline/echo", messages=HELLO, stream=True)
    with pytest.raises(openai.AuthenticationError):
        gateway.models.list()

    assert refused.value.status_code == 401
    assert refused.value.code == "invalid_api_key"
    assert not OperationLog.objects.exists()


def test_a_budget_refusal_raises_rate_limit_error_naming_the_budget(
    gateway: OpenAI, upstream: OpenAIServer
) -> None:
    route_chat_to_upstream(upstream)
    Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal(0))

    with pytest.raises(openai.RateLimitError) as refused:
        gateway.chat.completions.create(model="acme/small", messages=HELLO)
    with pytest.raises(openai.RateLimitError):
        gateway.chat.completions.create(model="acme/small", messages=HELLO, stream=True)

    error = refused.value
    assert error.status_code == 429
    assert error.code == "budget_exceeded"
    body: Any = error.body
    assert (body["budget"], body["limit"], body["spent"]) == ("global budget", "0", "0")
    assert body["resets_at"]
    assert "global budget" in error.message
    assert upstream.requests == []
    assert [row.status for row in OperationLog.objects.all()] == ["refused", "refused"]


def test_an_approval_is_waited_on_and_named_in_a_header(gateway: OpenAI, owner: Any) -> None:
    route = Route.objects.get(operation="chat")
    route.spends_money = True
    route.save()

    with pytest.raises(openai.PermissionDeniedError) as asked:
        gateway.chat.completions.create(model="offline/echo", messages=HELLO)
    body: Any = asked.value.body
    assert asked.value.code == "approval_required"
    decide_approval(Approval.objects.get(pk=body["approval_id"]), user=owner, approve=True)

    completion = gateway.chat.completions.create(
        model="offline/echo",
        messages=HELLO,
        extra_headers={"X-Approval-Id": str(body["approval_id"])},
    )

    assert completion.choices[0].message.content == offline_reply()


def test_the_gateway_switched_off_raises_a_server_error(gateway: OpenAI) -> None:
    toggle = FeatureToggle.objects.get(key="gateway.enabled")
    toggle.enabled = False
    toggle.save()

    with pytest.raises(openai.InternalServerError) as refused:
        gateway.chat.completions.create(model="offline/echo", messages=HELLO)

    assert refused.value.status_code == 503
    assert refused.value.code == "feature_off"


def test_a_stream_reaches_the_client_while_it_is_generated(
    gateway: OpenAI, upstream: OpenAIServer
) -> None:
    route_chat_to_upstream(upstream)
    upstream.reply(Answer("one two three four five", event_delay=0.2))

    arrivals = []
    for chunk in gateway.chat.completions.create(model="acme/small", messages=HELLO, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())

    assert len(arrivals) == 5
    # Not buffered to the end: the words arrive about as far apart as they were sent.
    assert arrivals[-1] - arrivals[0] > 0.5


def test_a_client_that_leaves_mid_stream_still_gets_the_call_logged_and_settled(
    gateway: OpenAI, upstream: OpenAIServer
) -> None:
    route_chat_to_upstream(upstream)
    budget = Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal(10))
    upstream.reply(Answer(" ".join(["word"] * 40), event_delay=0.1))

    stream = gateway.chat.completions.create(model="acme/small", messages=HELLO, stream=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    stream.close()

    row = logged_call()
    assert (row.status, row.stream, row.model_used) == ("cancelled", True, "acme/small")
    assert row.error == CALLER_WENT_AWAY
    reservation = Reservation.objects.get(request_id=row.request_id)
    assert reservation.status == Reservation.Status.SETTLED
    ledger = BudgetDay.objects.get(budget=budget)
    assert ledger.reserved == 0
    assert ledger.spent == row.cost
