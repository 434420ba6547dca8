"""Budgets, approvals and kill switches hold for every kind of call the gateway serves
(embeddings and speech here; chat in test_gateway.py), with the same answers."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from controlplane.approvals import decide_approval
from controlplane.models import Approval
from controlplane.money import dumps_exact
from routing.models import AIModel, Budget, BudgetDay, OperationLog, Provider, Reservation
from routing.models.catalog import CallKind
from tests.routing.openai_server import OpenAIServer
from tests.routing.test_gateway import Committed, error_of, route_to, set_toggle

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Kind:
    url: str
    operation: str
    kind: str
    body: dict[str, Any]
    prices: dict[str, Decimal]


EMBEDDINGS = Kind(
    "/v1/embeddings",
    "embeddings",
    CallKind.EMBEDDING,
    {"model": "text-embedding-3-small", "input": ["search the logs"]},
    {"price_prompt": Decimal("0.00000002")},
)
SPEECH = Kind(
    "/v1/audio/speech",
    "speech",
    CallKind.SPEECH,
    {"model": "tts-1", "input": "The deploy failed.", "voice": "alloy"},
    {"price_character": Decimal("0.000015")},
)
KINDS = pytest.mark.parametrize("kind", [EMBEDDINGS, SPEECH], ids=["embeddings", "speech"])


@pytest.fixture
def raw_key(issued: Any) -> str:
    return str(issued[1])


def call(client: Client, kind: Kind, key: str, headers: dict[str, str] | None = None) -> Any:
    return client.post(
        kind.url,
        data=dumps_exact(kind.body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {key}", **(headers or {})},
    )


def priced_model(server: OpenAIServer, kind: Kind) -> AIModel:
    provider = Provider.objects.create(
        name="upstream", kind=Provider.Kind.COMPATIBLE, base_url=server.url, timeout_seconds=5
    )
    return AIModel.objects.create(
        provider=provider, model_id=f"acme/{kind.operation}", kind=kind.kind, **kind.prices
    )


@KINDS
def test_a_used_up_budget_refuses_the_call_with_429_before_the_provider_is_asked(
    client: Client, raw_key: str, kind: Kind, upstream: OpenAIServer, committed: Committed
) -> None:
    with committed():
        route_to(kind.operation, priced_model(upstream, kind))
    budget = Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal(0))

    response = call(client, kind, raw_key)

    assert response.status_code == 429
    error = error_of(response)
    assert (error["code"], error["budget_id"]) == ("budget_exceeded", budget.pk)
    assert int(response["Retry-After"]) > 0
    assert upstream.requests == []
    assert not Reservation.objects.exists()
    refused = OperationLog.objects.get()
    assert (refused.status, refused.kind, refused.operation) == (
        "refused",
        kind.kind,
        kind.operation,
    )


@KINDS
def test_a_call_past_the_budget_asks_for_approval(
    client: Client, raw_key: str, kind: Kind, upstream: OpenAIServer, committed: Committed
) -> None:
    with committed():
        route_to(kind.operation, priced_model(upstream, kind))
    Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal("0.0000000001"))

    response = call(client, kind, raw_key)

    assert response.status_code == 403
    error = error_of(response)
    assert (error["code"], error["rule"]) == ("approval_required", "over_budget")
    assert upstream.requests == []


@KINDS
def test_a_call_that_spends_money_waits_for_an_owner_and_goes_through_once_approved(
    client: Client,
    raw_key: str,
    kind: Kind,
    owner: Any,
    upstream: OpenAIServer,
    committed: Committed,
) -> None:
    with committed():
        route_to(kind.operation, priced_model(upstream, kind), spends_money=True)

    asked = call(client, kind, raw_key)

    assert asked.status_code == 403
    error = error_of(asked)
    assert (error["code"], error["rule"]) == ("approval_required", "spends_money")
    approval = Approval.objects.get(pk=error["approval_id"])
    assert approval.proposal["operation"] == kind.operation
    assert upstream.requests == []
    with committed():
        decide_approval(approval, user=owner, approve=True, note="Go ahead")

    through = call(client, kind, raw_key, {"X-Approval-Id": str(approval.pk)})

    assert through.status_code == 200
    assert len(upstream.requests) == 1
    ok = OperationLog.objects.get(status="ok")
    assert (ok.kind, ok.request_id) == (kind.kind, through["X-Request-Id"])
    assert ok.cost > 0
    approval.refresh_from_db()
    assert ok.request_id in approval.outcome
    reused = call(client, kind, raw_key, {"X-Approval-Id": str(approval.pk)})
    assert reused.status_code == 403


@KINDS
def test_the_kill_switches_refuse_the_call_with_503(
    client: Client, raw_key: str, kind: Kind, committed: Committed
) -> None:
    with committed():
        set_toggle(f"operation.{kind.operation}.enabled", False)

    off = call(client, kind, raw_key)

    assert off.status_code == 503
    assert f"operation.{kind.operation}.enabled" in error_of(off)["message"]
    other = EMBEDDINGS if kind is SPEECH else SPEECH
    assert call(client, other, raw_key).status_code == 200

    with committed():
        set_toggle(f"operation.{kind.operation}.enabled", True)
        set_toggle("gateway.enabled", False)

    gateway_off = call(client, kind, raw_key)

    assert gateway_off.status_code == 503
    assert "gateway.enabled" in error_of(gateway_off)["message"]
    refused = OperationLog.objects.filter(operation=kind.operation)
    assert [row.status for row in refused] == ["refused", "refused"]
    assert not BudgetDay.objects.exclude(spent=0).exists()


@KINDS
def test_a_header_at_fault_gets_400_and_a_missing_key_401(
    client: Client, raw_key: str, kind: Kind
) -> None:
    bad_header = call(client, kind, raw_key, {"X-Approval-Id": "soon"})
    no_key = client.post(kind.url, data=dumps_exact(kind.body), content_type="application/json")

    assert bad_header.status_code == 400
    assert error_of(bad_header)["param"] == "X-Approval-Id"
    assert no_key.status_code == 401
    assert not OperationLog.objects.exists()


@KINDS
def test_only_post_is_answered(client: Client, raw_key: str, kind: Kind) -> None:
    response = client.get(kind.url, headers={"Authorization": f"Bearer {raw_key}"})

    assert response.status_code == 405
    assert response["Allow"] == "POST"
