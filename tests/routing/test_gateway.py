"""The OpenAI-compatible gateway (/v1/), through Django's test client.

Upstream models are a real local OpenAI-compatible server (`OpenAIServer`) behind a
catalog provider of kind "compatible"; the seeded routes answer with the offline
model. The official `openai` package against a live daphne is in
test_gateway_openai_client.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import Client

from controlplane.approvals import decide_approval
from controlplane.models import Approval, AuditEvent, FeatureToggle
from controlplane.money import MoneySum, dumps_exact, loads_exact
from routing.call_approvals import APPROVAL_ACTION
from routing.models import (
    AIModel,
    Budget,
    BudgetDay,
    OperationLog,
    Provider,
    Reservation,
    Route,
    RouteFallback,
    ServiceKey,
)
from routing.models.gateway import hash_key
from routing.providers import ChatRequest, OfflineProvider
from tests.routing.openai_server import (
    Answer,
    Disconnect,
    Failure,
    OpenAIServer,
    Stream,
    chunk,
    usage_chunk,
)

pytestmark = pytest.mark.django_db

CHAT_URL = "/v1/chat/completions"
MODELS_URL = "/v1/models"
HELLO = [{"role": "user", "content": "Hello there"}]
PROMPT_PRICE = Decimal("0.000001")
COMPLETION_PRICE = Decimal("0.000002")
# Eighteen places, as OpenRouter reports costs: a float would lose the last digits.
UPSTREAM_COST = Decimal("0.000123456789012345")

Committed = Callable[[], AbstractContextManager[Any]]


# -- helpers -------------------------------------------------------------------------


@pytest.fixture
def raw_key() -> str:
    return ServiceKey.issue(name="billing worker", service="billing")[1]


def post(client: Client, body: Any, key: str | None, headers: dict[str, str] | None = None) -> Any:
    data = body if isinstance(body, str | bytes) else dumps_exact(body)
    auth = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return client.post(
        CHAT_URL, data=data, content_type="application/json", headers={**auth, **(headers or {})}
    )


def error_of(response: Any) -> dict[str, Any]:
    assert response["Content-Type"] == "application/json"
    return loads_exact(response.content)["error"]


def sse_text(response: Any) -> str:
    """The whole body of a streamed answer (an async iterator under the test client)."""
    assert response.streaming
    assert response["Content-Type"] == "text/event-stream"

    async def read() -> bytes:
        return b"".join([part async for part in response.streaming_content])

    return async_to_sync(read)().decode()


def sse_data(text: str) -> list[str]:
    """The `data:` payloads of a server-sent-event body, in order."""
    blocks = [block for block in text.split("\n\n") if block]
    assert all(block.startswith("data: ") for block in blocks), blocks
    return [block.removeprefix("data: ") for block in blocks]


def exact(event: dict[str, Any]) -> Any:
    """An event as a client reads it off the wire, numbers as exact Decimals."""
    return loads_exact(dumps_exact(event))


def compatible_models(server: OpenAIServer, *model_ids: str) -> list[AIModel]:
    provider = Provider.objects.create(
        name="upstream", kind=Provider.Kind.COMPATIBLE, base_url=server.url, timeout_seconds=5
    )
    return [
        AIModel.objects.create(
            provider=provider,
            model_id=model_id,
            context_length=128_000,
            price_prompt=PROMPT_PRICE,
            price_completion=COMPLETION_PRICE,
        )
        for model_id in model_ids
    ]


def route_to(operation: str, primary: AIModel, *fallbacks: AIModel, **rules: Any) -> Route:
    route = Route.objects.get(operation=operation)
    route.primary_model = primary
    for name, value in rules.items():
        setattr(route, name, value)
    route.save()
    for position, model in enumerate(fallbacks):
        RouteFallback.objects.create(route=route, model=model, position=position)
    return route


def set_toggle(key: str, enabled: bool) -> None:
    FeatureToggle.objects.update_or_create(key=key, defaults={"enabled": enabled})


def offline_reply(messages: list[dict[str, Any]]) -> str:
    return OfflineProvider().complete(ChatRequest(model="offline/echo", messages=messages)).content


# -- service API keys ----------------------------------------------------------------


def test_a_request_without_a_key_gets_401(client: Client) -> None:
    response = post(client, {"messages": HELLO}, key=None)

    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_api_key"
    assert not OperationLog.objects.exists()


def test_a_wrong_key_gets_401(client: Client, raw_key: str) -> None:
    lookup = ServiceKey.objects.get().lookup
    # The right lookup with another secret, and a well-formed key that was never issued.
    for wrong in (f"cpk_{lookup}_{'x' * 43}", f"cpk_{'0' * 12}_{'x' * 43}", raw_key + "x"):
        response = post(client, {"messages": HELLO}, key=wrong)
        assert response.status_code == 401, wrong
        assert error_of(response)["code"] == "invalid_api_key"
    assert not OperationLog.objects.exists()


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "bearer {raw}",
        "{raw}",
        "Bearer cpk_",
        "Bearer cpk_nounderscore",
        "Bearer sk-proj-0123456789abcdef",
    ],
)
def test_a_malformed_authorization_header_gets_401(
    client: Client, raw_key: str, authorization: str
) -> None:
    response = client.post(
        CHAT_URL,
        data=dumps_exact({"messages": HELLO}),
        content_type="application/json",
        headers={"Authorization": authorization.format(raw=raw_key)},
    )

    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_api_key"


def test_a_revoked_key_gets_401(client: Client, committed: Committed) -> None:
    with committed():
        key, raw = ServiceKey.issue(name="old worker", service="billing")
    assert post(client, {"messages": HELLO}, raw).status_code == 200

    with committed():  # every process drops its cached keys once the change commits
        key.revoke()

    assert key.revoked
    for response in (
        post(client, {"messages": HELLO}, raw),
        client.get(MODELS_URL, headers={"Authorization": f"Bearer {raw}"}),
    ):
        assert response.status_code == 401
        assert error_of(response)["code"] == "invalid_api_key"
    assert OperationLog.objects.count() == 1


def test_a_key_is_stored_only_as_its_hash() -> None:
    key, raw = ServiceKey.issue(name="billing worker", service="billing")

    row = ServiceKey.objects.filter(pk=key.pk).values().get()
    assert raw.startswith(f"cpk_{row['lookup']}_")
    assert row["key_hash"] == hash_key(raw)
    assert raw not in repr(row)
    secret = raw.removeprefix(f"cpk_{row['lookup']}_")
    assert secret not in repr(row)
    assert not any(secret in repr(event) for event in AuditEvent.objects.values())
    assert ServiceKey.authenticate(raw) == key


def test_the_admin_shows_a_new_key_once_and_stores_only_its_hash(
    client: Client, owner: Any
) -> None:
    client.force_login(owner)

    response = client.post(
        "/admin/routing/servicekey/add/",
        {"name": "billing worker", "service": "billing", "default_operation": "summarize"},
    )

    # On the page answering the POST, not in a message (a cookie) for the next one.
    assert response.status_code == 200
    raws = re.findall(r"cpk_[0-9a-f]{12}_[\w-]{43}", response.content.decode())
    assert len(set(raws)) == 1, raws
    raw = raws[0]
    key = ServiceKey.objects.get()
    assert (key.service, key.default_operation, key.created_by) == ("billing", "summarize", owner)
    assert key.key_hash == hash_key(raw)
    assert raw not in repr(ServiceKey.objects.filter(pk=key.pk).values().get())
    # Shown once: no later page has it.
    for page in ("/admin/routing/servicekey/", f"/admin/routing/servicekey/{key.pk}/change/"):
        later = client.get(page)
        assert later.status_code == 200
        assert raw not in later.content.decode()
    assert ServiceKey.authenticate(raw) == key


def test_a_call_is_logged_under_the_keys_service_and_default_operation(client: Client) -> None:
    _, raw = ServiceKey.issue(name="digest", service="reports", default_operation="summarize")

    response = post(client, {"messages": HELLO}, raw)

    assert response.status_code == 200
    row = OperationLog.objects.get()
    assert (row.operation, row.service, row.status) == ("summarize", "reports", "ok")
    assert row.request_id == response["X-Request-Id"]


def test_x_operation_names_another_operation_than_the_keys_default(client: Client) -> None:
    _, raw = ServiceKey.issue(name="digest", service="reports", default_operation="summarize")

    response = post(client, {"messages": HELLO}, raw, {"X-Operation": "agent"})

    assert response.status_code == 200
    row = OperationLog.objects.get()
    assert (row.operation, row.service) == ("agent", "reports")


def test_an_operation_without_a_route_gets_404(client: Client, raw_key: str) -> None:
    response = post(client, {"messages": HELLO}, raw_key, {"X-Operation": "no-such-thing"})

    assert response.status_code == 404
    error = error_of(response)
    assert error["code"] == "not_routable"
    assert "no-such-thing" in error["message"]
    assert error["reason"] == "unknown_operation"


def test_x_mode_picks_the_mode_and_an_unknown_mode_gets_404(client: Client, raw_key: str) -> None:
    assert post(client, {"messages": HELLO}, raw_key, {"X-Mode": "code"}).status_code == 200
    assert OperationLog.objects.get().mode == "code"

    response = post(client, {"messages": HELLO}, raw_key, {"X-Mode": "turbo"})

    assert response.status_code == 404
    assert error_of(response)["reason"] == "unknown_mode"


# -- kill switches ----------------------------------------------------------------------


def test_the_gateway_switched_off_answers_503_to_everything(
    client: Client, raw_key: str, committed: Committed
) -> None:
    with committed():
        set_toggle("gateway.enabled", False)

    auth = {"Authorization": f"Bearer {raw_key}"}
    responses = [
        post(client, {"messages": HELLO}, raw_key),
        post(client, {"messages": HELLO, "stream": True}, raw_key),
        post(client, {"messages": HELLO}, raw_key, {"X-Operation": "summarize"}),
        client.get(MODELS_URL, headers=auth),
    ]

    for response in responses:
        assert response.status_code == 503
        error = error_of(response)
        assert error["code"] == "feature_off"
        assert "gateway.enabled" in error["message"]
    assert not OperationLog.objects.exclude(status="refused").exists()
    assert OperationLog.objects.aggregate(total=MoneySum("cost"))["total"] in (None, 0)

    with committed():
        set_toggle("gateway.enabled", True)
    assert post(client, {"messages": HELLO}, raw_key).status_code == 200
    assert client.get(MODELS_URL, headers=auth).status_code == 200


def test_an_operation_switched_off_answers_503_for_that_operation_only(
    client: Client, raw_key: str, committed: Committed
) -> None:
    with committed():
        set_toggle("operation.summarize.enabled", False)

    off = post(client, {"messages": HELLO}, raw_key, {"X-Operation": "summarize"})
    off_stream = post(
        client, {"messages": HELLO, "stream": True}, raw_key, {"X-Operation": "summarize"}
    )

    for response in (off, off_stream):
        assert response.status_code == 503
        error = error_of(response)
        assert error["code"] == "feature_off"
        assert "operation.summarize.enabled" in error["message"]
    assert post(client, {"messages": HELLO}, raw_key).status_code == 200
    assert post(client, {"messages": HELLO}, raw_key, {"X-Operation": "agent"}).status_code == 200
    refused = OperationLog.objects.filter(operation="summarize")
    assert [row.status for row in refused] == ["refused", "refused"]
    assert all(row.cost == 0 for row in refused)


# -- approvals --------------------------------------------------------------------------


def test_a_call_that_spends_money_waits_for_an_owner_and_goes_through_once_approved(
    client: Client, raw_key: str, owner: Any, committed: Committed
) -> None:
    with committed():
        route_to("chat", AIModel.objects.get(model_id="offline/echo"), spends_money=True)

    asked = post(client, {"messages": HELLO}, raw_key)

    assert asked.status_code == 403
    error = error_of(asked)
    assert error["code"] == "approval_required"
    assert error["rule"] == "spends_money"
    approval = Approval.objects.get(pk=error["approval_id"])
    assert f"#{approval.pk}" in error["message"]
    assert approval.action == APPROVAL_ACTION
    assert approval.status == Approval.Status.PENDING
    assert approval.requested_by.username == "service-billing"
    assert approval.proposal["operation"] == "chat"
    # Asking again before a decision waits on the same approval.
    again = post(client, {"messages": HELLO}, raw_key)
    assert error_of(again)["approval_id"] == approval.pk
    assert Approval.objects.count() == 1

    with committed():
        decide_approval(approval, user=owner, approve=True, note="Go ahead")

    through = post(client, {"messages": HELLO}, raw_key, {"X-Approval-Id": str(approval.pk)})

    assert through.status_code == 200
    body = loads_exact(through.content)
    assert body["choices"][0]["message"]["content"] == offline_reply(HELLO)
    ok = OperationLog.objects.get(status="ok")
    assert (ok.operation, ok.service, ok.request_id) == ("chat", "billing", through["X-Request-Id"])
    assert OperationLog.objects.filter(status="refused").count() == 2
    approval.refresh_from_db()
    assert ok.request_id in approval.outcome

    # One approval, one call: the next call asks for a new one.
    reused = post(client, {"messages": HELLO}, raw_key, {"X-Approval-Id": str(approval.pk)})
    assert reused.status_code == 403
    assert error_of(reused)["approval_id"] != approval.pk


def test_an_approval_that_is_pending_or_rejected_does_not_let_a_call_through(
    client: Client, raw_key: str, owner: Any, committed: Committed
) -> None:
    with committed():
        route_to("chat", AIModel.objects.get(model_id="offline/echo"), spends_money=True)
    approval_id = error_of(post(client, {"messages": HELLO}, raw_key))["approval_id"]

    pending = post(client, {"messages": HELLO}, raw_key, {"X-Approval-Id": str(approval_id)})
    assert pending.status_code == 403
    assert error_of(pending)["approval_id"] == approval_id

    with committed():
        decide_approval(Approval.objects.get(pk=approval_id), user=owner, approve=False)
    rejected = post(client, {"messages": HELLO}, raw_key, {"X-Approval-Id": str(approval_id)})

    assert rejected.status_code == 403
    assert error_of(rejected)["approval_id"] != approval_id
    assert not OperationLog.objects.filter(status="ok").exists()


def test_an_approval_for_one_operation_does_not_let_another_through(
    client: Client, raw_key: str, owner: Any, committed: Committed
) -> None:
    echo = AIModel.objects.get(model_id="offline/echo")
    with committed():
        route_to("chat", echo, spends_money=True)
        route_to("summarize", echo, spends_money=True)
    approval_id = error_of(post(client, {"messages": HELLO}, raw_key))["approval_id"]
    with committed():
        decide_approval(Approval.objects.get(pk=approval_id), user=owner, approve=True)

    other = post(
        client,
        {"messages": HELLO},
        raw_key,
        {"X-Approval-Id": str(approval_id), "X-Operation": "summarize"},
    )

    assert other.status_code == 403
    assert error_of(other)["approval_id"] != approval_id


def test_an_approval_for_one_service_does_not_let_another_through(
    client: Client, raw_key: str, owner: Any, committed: Committed
) -> None:
    with committed():
        route_to("chat", AIModel.objects.get(model_id="offline/echo"), spends_money=True)
    approval_id = error_of(post(client, {"messages": HELLO}, raw_key))["approval_id"]
    with committed():
        decide_approval(Approval.objects.get(pk=approval_id), user=owner, approve=True)
    with committed():  # a new key is seen by the gateway once it commits
        _, other = ServiceKey.issue(name="search", service="search")

    borrowed = post(client, {"messages": HELLO}, other, {"X-Approval-Id": str(approval_id)})

    assert borrowed.status_code == 403
    assert error_of(borrowed)["approval_id"] != approval_id
    assert Approval.objects.get(pk=approval_id).outcome == ""
    assert (
        post(client, {"messages": HELLO}, raw_key, {"X-Approval-Id": str(approval_id)}).status_code
        == 200
    )


# -- budgets ----------------------------------------------------------------------------


def test_a_used_up_global_budget_refuses_the_call_with_429_naming_it(
    client: Client, raw_key: str, upstream: OpenAIServer, committed: Committed
) -> None:
    (model,) = compatible_models(upstream, "acme/small")
    with committed():
        route_to("chat", model)
    budget = Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal(0))

    response = post(client, {"messages": HELLO}, raw_key)

    assert response.status_code == 429
    error = error_of(response)
    assert error["code"] == "budget_exceeded"
    assert error["budget"] == "global budget"
    assert error["budget_id"] == budget.pk
    assert error["scope"] == "global"
    assert (error["limit"], error["spent"], error["reserved"]) == ("0", "0", "0")
    assert error["resets_at"].endswith("T00:00:00+00:00")
    assert response["Retry-After"] == str(error["retry_after"])
    assert int(response["Retry-After"]) > 0
    assert "global budget" in error["message"]
    assert error["resets_at"] in error["message"]
    assert upstream.requests == []
    assert not Reservation.objects.exists()
    refused = OperationLog.objects.get()
    assert (refused.status, refused.cost, refused.service) == ("refused", 0, "billing")


def test_a_service_budget_spent_to_its_limit_refuses_the_next_call_with_429(
    client: Client, raw_key: str, upstream: OpenAIServer, committed: Committed
) -> None:
    (model,) = compatible_models(upstream, "acme/small")
    with committed():
        route_to("chat", model)
    Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal(100))
    budget = Budget.objects.create(
        scope=Budget.Scope.SERVICE, service="billing", daily_limit=Decimal("0.01")
    )
    upstream.reply(Answer("That was dear.", cost="0.01"))
    assert post(client, {"messages": HELLO}, raw_key).status_code == 200

    response = post(client, {"messages": HELLO}, raw_key)

    assert response.status_code == 429
    error = error_of(response)
    assert error["code"] == "budget_exceeded"
    assert (error["budget"], error["budget_id"], error["scope"]) == (
        "service billing budget",
        budget.pk,
        "service",
    )
    assert (error["limit"], error["spent"], error["reserved"]) == ("0.01", "0.01", "0")
    assert Decimal(error["requested"]) > 0
    assert "resets_at" in error
    assert "service billing budget" in error["message"]
    assert len(upstream.requests) == 1
    ledgers = BudgetDay.objects.order_by("budget_id")
    assert [(row.spent, row.reserved) for row in ledgers] == [
        (Decimal("0.01"), 0),
        (Decimal("0.01"), 0),
    ]
    # Other services still have room under the global budget.
    with committed():  # a new key is seen by the gateway once it commits
        _, other = ServiceKey.issue(name="search", service="search")
    assert post(client, {"messages": HELLO}, other).status_code == 200


def test_a_call_that_would_take_a_budget_past_its_limit_asks_for_approval(
    client: Client, raw_key: str, upstream: OpenAIServer, committed: Committed
) -> None:
    (model,) = compatible_models(upstream, "acme/small")
    with committed():
        route_to("chat", model)
    # Room left, but less than this call's estimate: an Owner may let it through.
    Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal("0.0001"))

    response = post(client, {"messages": HELLO}, raw_key)

    assert response.status_code == 403
    error = error_of(response)
    assert (error["code"], error["rule"]) == ("approval_required", "over_budget")
    assert "global budget" in error["message"]
    assert upstream.requests == []


# -- routes, fallbacks, pass-through, cost ----------------------------------------------


def test_a_failing_primary_model_falls_back_to_the_next_one(
    client: Client, raw_key: str, upstream: OpenAIServer, committed: Committed
) -> None:
    primary, fallback = compatible_models(upstream, "acme/primary", "acme/fallback")
    with committed():
        route_to("chat", primary, fallback)
    upstream.reply(Failure(500, "primary is down"), model="acme/primary")
    upstream.reply(Answer("From the fallback.", cost=UPSTREAM_COST), model="acme/fallback")

    response = post(client, {"model": "whatever", "messages": HELLO}, raw_key)

    assert response.status_code == 200
    body = loads_exact(response.content)
    assert body["choices"][0]["message"]["content"] == "From the fallback."
    assert body["model"] == "acme/fallback"
    assert response["X-Model-Used"] == "acme/fallback"
    assert [request.json["model"] for request in upstream.requests] == [
        "acme/primary",
        "acme/fallback",
    ]
    row = OperationLog.objects.get()
    assert (row.model_requested, row.model_used, row.fallback_used) == (
        "acme/primary",
        "acme/fallback",
        True,
    )
    assert [attempt["outcome"] for attempt in row.attempts] == ["error", "ok"]
    assert row.cost == UPSTREAM_COST


def test_when_every_model_fails_the_answer_is_502_and_nothing_is_spent(
    client: Client, raw_key: str, upstream: OpenAIServer, committed: Committed
) -> None:
    primary, fallback = compatible_models(upstream, "acme/primary", "acme/fallback")
    with committed():
        route_to("chat", primary, fallback)
    budget = Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal(10))
    upstream.reply(Failure(503, "busy"), model="acme/primary")
    upstream.reply(Disconnect(), model="acme/fallback")

    response = post(client, {"messages": HELLO}, raw_key)

    assert response.status_code == 502
    error = error_of(response)
    assert error["code"] == "upstream_error"
    assert error["request_id"] == OperationLog.objects.get().request_id
    row = OperationLog.objects.get()
    assert (row.status, row.cost, row.model_used) == ("error", 0, "")
    ledger = BudgetDay.objects.get(budget=budget)
    assert (ledger.spent, ledger.reserved) == (0, 0)
    assert Reservation.objects.get().status == Reservation.Status.RELEASED


def test_a_non_streamed_answer_is_the_upstream_body_unchanged_and_its_cost_is_logged(
    client: Client, raw_key: str, upstream: OpenAIServer, committed: Committed
) -> None:
    (model,) = compatible_models(upstream, "acme/exact")
    with committed():
        route_to("chat", model)
    budget = Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal(10))
    usage = {
        "prompt_tokens": 21,
        "completion_tokens": 3,
        "total_tokens": 24,
        "prompt_tokens_details": {"cached_tokens": 5},
        "completion_tokens_details": {"reasoning_tokens": 1},
        "cost_details": {"upstream_inference_cost": Decimal("0.000100000000000001")},
        "is_byok": False,
    }
    upstream.reply(Answer("Exactly this.", usage=usage, cost=UPSTREAM_COST))

    response = post(client, {"model": "acme/exact", "messages": HELLO, "max_tokens": 50}, raw_key)

    assert response.status_code == 200
    body = loads_exact(response.content)
    assert body == {
        "id": "gen-test-1",
        "object": "chat.completion",
        "created": body["created"],
        "model": "acme/exact",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Exactly this."},
                "finish_reason": "stop",
            }
        ],
        "usage": {**usage, "cost": UPSTREAM_COST},
    }
    assert "0.000123456789012345" in response.content.decode()
    assert "0.000100000000000001" in response.content.decode()
    assert response["X-Cost-USD"] == "0.000123456789012345"
    assert upstream.requests[0].json["max_tokens"] == 50
    row = OperationLog.objects.get()
    assert row.cost == UPSTREAM_COST
    assert row.cost_source == OperationLog.CostSource.PROVIDER
    assert (row.prompt_tokens, row.completion_tokens) == (21, 3)
    assert (row.cached_tokens, row.reasoning_tokens) == (5, 1)
    assert (row.stream, row.status, row.service) == (False, "ok", "billing")
    assert BudgetDay.objects.get(budget=budget).spent == UPSTREAM_COST


def test_extra_openai_fields_are_passed_to_the_upstream_as_sent(
    client: Client, raw_key: str, upstream: OpenAIServer, committed: Committed
) -> None:
    (model,) = compatible_models(upstream, "acme/exact")
    with committed():
        route_to("chat", model)
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]

    response = post(
        client,
        {
            "messages": HELLO,
            "temperature": Decimal("0.25"),
            "seed": 7,
            "tools": tools,
            "response_format": {"type": "text"},
        },
        raw_key,
    )

    assert response.status_code == 200
    sent = upstream.requests[0].json
    assert sent["temperature"] == Decimal("0.25")
    assert (sent["seed"], sent["tools"], sent["response_format"]) == (
        7,
        tools,
        {"type": "text"},
    )
    assert sent["messages"] == HELLO


def test_a_stream_is_passed_through_event_for_event_and_its_exact_cost_is_logged(
    client: Client, raw_key: str, upstream: OpenAIServer, committed: Committed
) -> None:
    (model,) = compatible_models(upstream, "acme/stream")
    with committed():
        route_to("chat", model)
    budget = Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal(10))
    events: tuple[dict[str, Any] | str, ...] = (
        ": OPENROUTER PROCESSING",
        chunk("", role="assistant", model="acme/stream"),
        chunk("Exact ", model="acme/stream"),
        ": OPENROUTER PROCESSING",
        chunk("digits.", model="acme/stream"),
        chunk(finish_reason="stop", model="acme/stream"),
        usage_chunk(
            12, 2, cost=UPSTREAM_COST, cached_tokens=4, reasoning_tokens=1, model="acme/stream"
        ),
    )
    upstream.reply(Stream(events))

    response = post(client, {"messages": HELLO, "stream": True}, raw_key)

    assert response.status_code == 200
    assert response["X-Request-Id"]
    text = sse_text(response)
    assert text.endswith("data: [DONE]\n\n")
    data = sse_data(text)
    assert data[-1] == "[DONE]"
    assert [loads_exact(payload) for payload in data[:-1]] == [
        exact(event) for event in events if isinstance(event, dict)
    ]
    assert loads_exact(data[-2])["usage"]["cost"] == UPSTREAM_COST
    assert "0.000123456789012345" in text
    assert upstream.requests[0].json["stream"] is True
    row = OperationLog.objects.get()
    assert row.cost == UPSTREAM_COST
    assert row.cost_source == OperationLog.CostSource.PROVIDER
    assert (row.stream, row.status, row.model_used) == (True, "ok", "acme/stream")
    assert (row.prompt_tokens, row.completion_tokens) == (12, 2)
    assert (row.cached_tokens, row.reasoning_tokens) == (4, 1)
    assert row.request_id == response["X-Request-Id"]
    assert BudgetDay.objects.get(budget=budget).spent == UPSTREAM_COST


def test_the_offline_model_streams_its_reply_and_ends_with_done(
    client: Client, raw_key: str
) -> None:
    response = post(client, {"messages": HELLO, "stream": True}, raw_key)

    assert response.status_code == 200
    data = sse_data(sse_text(response))
    assert data[-1] == "[DONE]"
    events = [loads_exact(payload) for payload in data[:-1]]
    assert all(event["object"] == "chat.completion.chunk" for event in events)
    content = "".join(
        choice["delta"].get("content") or "" for event in events for choice in event["choices"]
    )
    assert content == offline_reply(HELLO)
    assert len([event for event in events if event["choices"]]) > 3  # token by token
    assert events[-1]["choices"] == []
    assert "usage" in events[-1]
    row = OperationLog.objects.get()
    assert (row.stream, row.status, row.provider) == (True, "ok", "offline")
    assert (row.cost, row.cost_source) == (0, OperationLog.CostSource.OFFLINE)


def test_a_stream_falls_back_when_the_primary_fails_before_its_first_event(
    client: Client, raw_key: str, upstream: OpenAIServer, committed: Committed
) -> None:
    primary, fallback = compatible_models(upstream, "acme/primary", "acme/fallback")
    with committed():
        route_to("chat", primary, fallback)
    upstream.reply(Failure(429, "slow down", headers={"Retry-After": "30"}), model="acme/primary")
    upstream.reply(Answer("Fallback speaking.", cost="0.0002"), model="acme/fallback")

    response = post(client, {"messages": HELLO, "stream": True}, raw_key)

    assert response.status_code == 200
    data = sse_data(sse_text(response))
    assert data[-1] == "[DONE]"
    events = [loads_exact(payload) for payload in data[:-1]]
    content = "".join(
        choice["delta"].get("content") or "" for event in events for choice in event["choices"]
    )
    assert content == "Fallback speaking."
    assert {event["model"] for event in events} == {"acme/fallback"}
    row = OperationLog.objects.get()
    assert (row.model_used, row.fallback_used, row.cost) == (
        "acme/fallback",
        True,
        Decimal("0.0002"),
    )


def test_a_stream_cut_off_upstream_ends_with_an_error_event_and_done(
    client: Client, raw_key: str, upstream: OpenAIServer, committed: Committed
) -> None:
    primary, fallback = compatible_models(upstream, "acme/primary", "acme/fallback")
    with committed():
        route_to("chat", primary, fallback)
    events = (
        chunk("", role="assistant", model="acme/primary"),
        chunk("Half an ", model="acme/primary"),
        chunk("answer", model="acme/primary"),
    )
    upstream.reply(Stream(events, drop_after=2), model="acme/primary")

    response = post(client, {"messages": HELLO, "stream": True}, raw_key)

    data = sse_data(sse_text(response))
    assert [loads_exact(payload) for payload in data[:2]] == [exact(e) for e in events[:2]]
    assert loads_exact(data[2])["error"]["type"] == "upstream_error"
    assert data[3:] == ["[DONE]"]
    # No silent switch of model once the client has part of an answer.
    assert [request.json["model"] for request in upstream.requests] == ["acme/primary"]
    row = OperationLog.objects.get()
    assert (row.status, row.model_used) == ("error", "acme/primary")


# -- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        (b"not json", None, "The body is not valid JSON"),
        (b"", None, "The body is not valid JSON"),
        (b"\xff\xfe", None, "The body is not valid JSON"),
        ("[1, 2]", None, "The body must be a JSON object."),
        ({"model": "offline/echo"}, "messages", "Invalid 'messages': 'messages' is a required"),
        ({"messages": []}, "messages", "Invalid 'messages': [] should be non-empty"),
        ({"messages": "Hello"}, "messages", "Invalid 'messages': 'Hello' is not of type"),
        ({"messages": [{"content": "Hello"}]}, "messages[0].role", "Invalid 'messages[0].role'"),
        ({"messages": [*HELLO, "Hello"]}, "messages[1]", "Invalid 'messages[1]'"),
        ({"messages": HELLO, "max_tokens": "10"}, "max_tokens", "Invalid 'max_tokens'"),
        ({"messages": HELLO, "max_tokens": 0}, "max_tokens", "Invalid 'max_tokens'"),
        ({"messages": HELLO, "max_tokens": -5}, "max_tokens", "Invalid 'max_tokens'"),
        ({"messages": HELLO, "max_tokens": 1.5}, "max_tokens", "Invalid 'max_tokens'"),
        ({"messages": HELLO, "max_tokens": True}, "max_tokens", "Invalid 'max_tokens'"),
        ({"messages": HELLO, "stream": "yes"}, "stream", "Invalid 'stream'"),
        ({"messages": HELLO, "stream": 1}, "stream", "Invalid 'stream'"),
        ({"messages": HELLO, "tools": {"name": "x"}}, "tools", "Invalid 'tools'"),
        # What the fuzzer found crashing the offline model, pricing or the refusal log.
        ({"messages": HELLO, "tools": [1]}, "tools[0]", "Invalid 'tools[0]'"),
        (
            {"messages": HELLO, "tools": [{"type": "function", "function": 5}]},
            "tools[0].function",
            "Invalid 'tools[0].function'",
        ),
        (
            {
                "messages": HELLO,
                "tools": [{"type": "function", "function": {"name": "x", "parameters": 5}}],
            },
            "tools[0].function.parameters",
            "Invalid 'tools[0].function.parameters'",
        ),
        (
            {"messages": [{"role": "assistant", "content": "", "tool_calls": 5}]},
            "messages[0].tool_calls",
            "Invalid 'messages[0].tool_calls'",
        ),
        (
            {"messages": [{"role": "assistant", "content": "", "tool_calls": [1.5]}]},
            "messages[0].tool_calls[0]",
            "Invalid 'messages[0].tool_calls[0]'",
        ),
        (
            b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": NaN}',
            None,
            "The body is not valid JSON: NaN is not a JSON number.",
        ),
        (
            b'{"messages": [{"role": "user", "content": "hi"}], "temperature": Infinity}',
            None,
            "The body is not valid JSON: Infinity is not a JSON number.",
        ),
        (
            {"messages": [{"role": "user", "content": "a\x00b"}]},
            "messages[0].content",
            "'messages[0].content' contains a NUL character",
        ),
        (
            {"messages": HELLO, "model": "offline/\x00echo"},
            "model",
            "'model' contains a NUL character",
        ),
        ({"messages": HELLO, "model": "m" * 201}, "model", "Invalid 'model'"),
        (b'{"messages": [' + b"[" * 5000 + b"]" * 5000 + b"]}", None, "The body nests deeper"),
        (b'{"messages": [' + b"[" * 70 + b"]" * 70 + b"]}", None, "The body nests deeper"),
    ],
)
def test_bad_input_gets_400_naming_the_field_and_spends_nothing(
    client: Client, raw_key: str, body: Any, param: str | None, message: str
) -> None:
    Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal(10))

    for stream in (False, True):
        if isinstance(body, dict):
            body = {**body, "stream": body.get("stream", stream)}
        response = post(client, body, raw_key)

        assert response.status_code == 400
        error = error_of(response)
        assert error["type"] == "invalid_request_error"
        assert error["param"] == param
        assert error["message"].startswith(message), error["message"]
    assert not OperationLog.objects.exists()
    assert not Reservation.objects.exists()
    assert not BudgetDay.objects.exists()


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Operation", "o" * 101),
        ("X-Mode", "m" * 21),
        ("X-Operation", "chat\tops"),
        ("X-Approval-Id", "²"),
        ("X-Approval-Id", "1" * 19),
    ],
)
def test_a_header_the_log_cannot_keep_gets_400_naming_it(
    client: Client, raw_key: str, header: str, value: str
) -> None:
    response = post(client, {"messages": HELLO}, raw_key, {header: value})

    assert response.status_code == 400
    error = error_of(response)
    assert (error["type"], error["param"]) == ("invalid_request_error", header)
    assert not OperationLog.objects.exists()
    assert not Reservation.objects.exists()


def test_an_approval_id_that_is_not_a_number_gets_400(client: Client, raw_key: str) -> None:
    response = post(client, {"messages": HELLO}, raw_key, {"X-Approval-Id": "abc"})

    assert response.status_code == 400
    assert error_of(response)["message"] == "X-Approval-Id must be an approval number."
    assert not OperationLog.objects.exists()


@pytest.mark.parametrize("operation", ["Chat", "my operation", "café", "chat/ops"])
def test_an_operation_no_route_could_be_named_gets_400_naming_x_operation(
    client: Client, raw_key: str, operation: str
) -> None:
    response = post(client, {"messages": HELLO}, raw_key, {"X-Operation": operation})

    assert response.status_code == 400
    error = error_of(response)
    assert (error["param"], error["message"]) == (
        "X-Operation",
        "X-Operation must be an operation's name: Use lowercase letters, digits, . _ and -.",
    )
    assert not OperationLog.objects.exists()
    assert not Reservation.objects.exists()
    # The key is checked first: without one, the answer says only that.
    assert post(client, {"messages": HELLO}, None, {"X-Operation": operation}).status_code == 401


def test_null_stream_and_max_tokens_mean_the_defaults_as_in_openais_api(
    client: Client, raw_key: str
) -> None:
    response = post(
        client, {"messages": HELLO, "stream": None, "max_tokens": None, "tools": None}, raw_key
    )

    assert response.status_code == 200
    assert not response.streaming
    assert loads_exact(response.content)["choices"][0]["message"]["content"] == offline_reply(HELLO)


def test_other_methods_than_post_are_not_allowed(client: Client, raw_key: str) -> None:
    auth = {"Authorization": f"Bearer {raw_key}"}
    assert client.get(CHAT_URL, headers=auth).status_code == 405
    assert client.post(MODELS_URL, headers=auth).status_code == 405


# -- /v1/models -------------------------------------------------------------------------


def test_models_lists_the_active_catalog_models(client: Client, raw_key: str) -> None:
    offline = Provider.objects.get(name="offline")
    AIModel.objects.create(provider=offline, model_id="offline/retired", active=False)
    switched_off = Provider.objects.create(
        name="switched-off", kind=Provider.Kind.COMPATIBLE, base_url="http://127.0.0.1:9/v1"
    )
    switched_off.enabled = False
    switched_off.save()
    AIModel.objects.create(provider=switched_off, model_id="acme/unreachable")

    response = client.get(MODELS_URL, headers={"Authorization": f"Bearer {raw_key}"})

    assert response.status_code == 200
    body = loads_exact(response.content)
    assert body["object"] == "list"
    ids = [model["id"] for model in body["data"]]
    expected = AIModel.objects.filter(active=True, provider__enabled=True)
    assert sorted(ids) == sorted(expected.values_list("model_id", flat=True))
    assert "offline/echo" in ids
    assert "offline/retired" not in ids
    assert "acme/unreachable" not in ids
    echo = next(model for model in body["data"] if model["id"] == "offline/echo")
    assert echo["object"] == "model"
    assert echo["owned_by"] == "offline"
    assert isinstance(echo["created"], int)


def test_models_needs_a_key(client: Client) -> None:
    for headers in ({}, {"Authorization": "Bearer cpk_000000000000_nope"}):
        response = client.get(MODELS_URL, headers=headers)
        assert response.status_code == 401
        assert error_of(response)["code"] == "invalid_api_key"
