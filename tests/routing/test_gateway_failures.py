"""The gateway when things go wrong after a call is reserved, or when what comes back
is wrong: nothing is left half-done, a misbehaving upstream cannot corrupt the books,
an approval answers its own rule and is used up only by a call that was made, and
`max_tokens` cannot reserve more than a model can produce.

Upstream models are a real local OpenAI-compatible server (`OpenAIServer`); a client
defect that no server can cause is a scripted provider (`use_scripted`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client, override_settings

from controlplane.approvals import decide_approval
from controlplane.models import Approval
from controlplane.money import loads_exact
from routing import reservations
from routing.calls import CALLER_WENT_AWAY
from routing.models import AIModel, Budget, BudgetDay, OperationLog, Reservation, ServiceKey
from routing.providers import ChatRequest, Completion, StreamChunk
from tests.routing.openai_server import Answer, Failure, OpenAIServer, Stream, chunk, usage_chunk
from tests.routing.test_gateway import (
    HELLO,
    Committed,
    compatible_models,
    error_of,
    post,
    route_to,
    sse_data,
    sse_text,
)
from tests.scripted_providers import use_scripted

pytestmark = pytest.mark.django_db

PRICED = "acme/priced"  # context 128,000; $0.000001 a prompt token, $0.000002 a completion one


@pytest.fixture
def raw_key() -> str:
    return ServiceKey.issue(name="billing worker", service="billing")[1]


@pytest.fixture
def priced(upstream: OpenAIServer, committed: Committed) -> AIModel:
    with committed():
        (model,) = compatible_models(upstream, PRICED)
        route_to("chat", model)
    return model


def assert_books_whole() -> None:
    """Every call was recorded in its request: nothing held, each reservation logged."""
    assert not Reservation.objects.filter(status=Reservation.Status.HELD).exists()
    logged = set(OperationLog.objects.values_list("request_id", flat=True))
    assert set(Reservation.objects.values_list("request_id", flat=True)) <= logged
    for ledger in BudgetDay.objects.all():
        assert ledger.reserved == 0


def refuse(constant: str) -> Any:
    raise AssertionError(f"{constant} is not JSON")


def catalog_cost(prompt_tokens: int, completion_tokens: int) -> Decimal:
    return prompt_tokens * Decimal("0.000001") + completion_tokens * Decimal("0.000002")


# -- max_tokens ------------------------------------------------------------------------


@pytest.mark.parametrize("asked", [10**13, 10**20, 10**30, 10**100, 128_001])
@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_more_tokens_than_the_models_context_gets_400_naming_the_field(
    client: Client, raw_key: str, priced: AIModel, budget: Budget, asked: int, field: str
) -> None:
    response = post(client, {"messages": HELLO, field: asked}, raw_key)

    assert response.status_code == 400
    error = error_of(response)
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "context_length_exceeded",
        field,
    )
    assert "at most 128,000" in error["message"]
    assert not Reservation.objects.exists()
    assert OperationLog.objects.get().status == OperationLog.Status.REFUSED


def test_the_context_itself_is_still_allowed(
    client: Client, raw_key: str, priced: AIModel, budget: Budget, upstream: OpenAIServer
) -> None:
    response = post(client, {"messages": HELLO, "max_tokens": 128_000}, raw_key)

    assert response.status_code == 200
    assert upstream.requests[-1].json["max_tokens"] == 128_000


@override_settings(GATEWAY_MAX_TOKENS_CAP=5000)
def test_a_model_without_a_context_is_capped_by_the_setting(
    client: Client, raw_key: str, priced: AIModel, budget: Budget, committed: Committed
) -> None:
    with committed():
        AIModel.objects.filter(pk=priced.pk).update(context_length=None)

    refused = post(client, {"messages": HELLO, "max_tokens": 5001}, raw_key)
    allowed = post(client, {"messages": HELLO, "max_tokens": 5000}, raw_key)

    assert refused.status_code == 400
    assert error_of(refused)["param"] == "max_tokens"
    assert allowed.status_code == 200


def test_a_huge_max_tokens_on_a_route_with_an_approval_threshold_gets_400(
    client: Client, raw_key: str, priced: AIModel, budget: Budget, committed: Committed
) -> None:
    with committed():
        route_to("chat", priced, approval_threshold=Decimal("0.01"))

    response = post(client, {"messages": HELLO, "max_tokens": 10**30}, raw_key)

    assert response.status_code == 400
    assert not Approval.objects.exists()


# -- what a provider reports ------------------------------------------------------------


@pytest.mark.parametrize(
    ("usage", "flagged"),
    [
        ({"prompt_tokens": 10, "completion_tokens": 5, "cost": "-0.5"}, "cost -0.5 ignored"),
        ({"prompt_tokens": 10, "completion_tokens": 5, "cost": "NaN"}, "cost NaN ignored"),
        ({"prompt_tokens": 10, "completion_tokens": 5, "cost": "1e30"}, "cost 1E+30 ignored"),
        ({"prompt_tokens": 10, "completion_tokens": 5, "cost": "lots"}, "cost 'lots' ignored"),
        # The literal NaN, which is not JSON (Python's json writes and reads it).
        ({"prompt_tokens": 10, "completion_tokens": 5, "cost": Decimal("NaN")}, "cost NaN"),
        ({"prompt_tokens": 10, "completion_tokens": 5, "cost": float("-inf")}, "-Infinity"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_a_cost_the_upstream_cannot_mean_is_priced_from_the_catalog_and_flagged(
    client: Client,
    raw_key: str,
    priced: AIModel,
    budget: Budget,
    upstream: OpenAIServer,
    usage: dict[str, Any],
    flagged: str,
    stream: bool,
) -> None:
    upstream.reply(Answer("Hello.", usage=usage))

    response = post(client, {"messages": HELLO, "stream": stream}, raw_key)

    assert response.status_code == 200
    if stream:
        assert sse_data(sse_text(response))[-1] == "[DONE]"
    else:
        assert Decimal(response["X-Cost-USD"]) == catalog_cost(10, 5)
        json.loads(response.content, parse_constant=refuse)  # what reaches the client is JSON
    row = OperationLog.objects.get()
    assert row.status == OperationLog.Status.OK
    assert (row.cost, row.cost_source) == (catalog_cost(10, 5), "catalog")
    assert flagged in row.usage_flag
    assert Reservation.objects.get().actual == row.cost
    assert BudgetDay.objects.get().spent == row.cost
    assert_books_whole()


@pytest.mark.parametrize("stream", [False, True])
def test_negative_or_absurd_token_counts_fall_back_to_the_calls_own_figures(
    client: Client,
    raw_key: str,
    priced: AIModel,
    budget: Budget,
    upstream: OpenAIServer,
    stream: bool,
) -> None:
    upstream.reply(Answer("Hello.", usage={"prompt_tokens": -7, "completion_tokens": 10**40}))

    response = post(client, {"messages": HELLO, "max_tokens": 100, "stream": stream}, raw_key)

    assert response.status_code == 200
    if stream:
        assert sse_data(sse_text(response))[-1] == "[DONE]"
    row = OperationLog.objects.get()
    # The prompt as estimated for the reservation, the most the answer could have been.
    assert (row.completion_tokens, row.status) == (100, "ok")
    assert row.prompt_tokens > 0
    assert "prompt_tokens -7 replaced" in row.usage_flag
    assert f"completion_tokens {10**40} replaced by 100" in row.usage_flag
    assert row.cost == catalog_cost(row.prompt_tokens, 100)
    assert_books_whole()


def test_a_truthful_report_is_not_flagged(
    client: Client, raw_key: str, priced: AIModel, budget: Budget, upstream: OpenAIServer
) -> None:
    upstream.reply(Answer("Hello.", cost="0.000123456789012345"))

    assert post(client, {"messages": HELLO}, raw_key).status_code == 200
    row = OperationLog.objects.get()
    assert (row.cost, row.usage_flag) == (Decimal("0.000123456789012345"), "")


# -- nothing half-done ------------------------------------------------------------------


class Defective:
    """A provider client with a defect (not a `ProviderError`): it raises while
    answering, or streams an event the gateway cannot write."""

    label = "defective"

    def __init__(self, *, unwritable_event: bool = False) -> None:
        self.unwritable_event = unwritable_event

    def complete(self, request: ChatRequest) -> Completion:
        raise KeyError("choices")

    def stream(self, request: ChatRequest) -> Iterator[StreamChunk | Completion]:
        yield StreamChunk(content="Hel", raw=chunk("Hel", model=request.model))
        if self.unwritable_event:
            yield StreamChunk(content="lo", raw={"choices": [], "odd": object()})
        raise KeyError("choices")


@pytest.mark.parametrize("stream", [False, True])
def test_a_provider_client_that_crashes_releases_or_settles_and_logs_the_real_error(
    client: Client, raw_key: str, priced: AIModel, budget: Budget, stream: bool
) -> None:
    with use_scripted("upstream", Defective()):
        response = post(client, {"messages": HELLO, "stream": stream}, raw_key)

    row = OperationLog.objects.get()
    assert row.status == OperationLog.Status.ERROR
    assert "KeyError: 'choices'" in row.error
    if stream:
        events = sse_data(sse_text(response))
        assert "KeyError" in loads_exact(events[-2])["error"]["message"]
        assert events[-1] == "[DONE]"
        # A piece of the answer was streamed: it is paid for.
        assert Reservation.objects.get().status == Reservation.Status.SETTLED
    else:
        assert response.status_code == 502
        assert "KeyError" in error_of(response)["message"]
        assert Reservation.objects.get().status == Reservation.Status.RELEASED
    assert_books_whole()


def test_a_stream_the_gateway_cannot_write_ends_with_an_error_and_done_and_is_recorded(
    client: Client, raw_key: str, priced: AIModel, budget: Budget
) -> None:
    with use_scripted("upstream", Defective(unwritable_event=True)):
        response = post(client, {"messages": HELLO, "stream": True}, raw_key)

    events = sse_data(sse_text(response))
    assert loads_exact(events[-2])["error"]["type"] == "server_error"
    assert events[-1] == "[DONE]"
    row = OperationLog.objects.get()
    assert row.status == OperationLog.Status.ERROR
    assert row.error.startswith("The gateway's stream failed: TypeError")
    assert row.error != CALLER_WENT_AWAY
    assert_books_whole()


def test_a_settlement_that_fails_still_records_the_call_plainly(
    client: Client,
    raw_key: str,
    priced: AIModel,
    budget: Budget,
    upstream: OpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settle = reservations.settle
    failures = iter([RuntimeError("the ledger refused it")])

    def settle_failing_once(*args: Any, **kwargs: Any) -> bool:
        for failure in failures:
            raise failure
        return settle(*args, **kwargs)

    monkeypatch.setattr(reservations, "settle", settle_failing_once)
    upstream.reply(Answer("Hello.", usage={"prompt_tokens": 10, "completion_tokens": 5}))

    response = post(client, {"messages": HELLO}, raw_key)

    assert response.status_code == 200
    row = OperationLog.objects.get()
    assert row.status == OperationLog.Status.ERROR
    assert "RuntimeError while recording the call: the ledger refused it" in row.error
    assert row.cost == catalog_cost(10, 5)
    assert BudgetDay.objects.get().spent == row.cost
    assert_books_whole()


def test_an_upstream_cut_off_mid_stream_is_recorded_as_such(
    client: Client, raw_key: str, priced: AIModel, budget: Budget, upstream: OpenAIServer
) -> None:
    upstream.reply(Stream((chunk("Hel", model=PRICED), usage_chunk(model=PRICED)), drop_after=1))

    events = sse_data(sse_text(post(client, {"messages": HELLO, "stream": True}, raw_key)))

    assert events[-1] == "[DONE]"
    assert OperationLog.objects.get().error != CALLER_WENT_AWAY
    assert_books_whole()


# -- approvals ----------------------------------------------------------------------------


def ask_and_approve(client: Client, raw_key: str, owner: Any, committed: Committed) -> Approval:
    asked = post(client, {"messages": HELLO}, raw_key)
    assert asked.status_code == 403
    approval = Approval.objects.get(pk=error_of(asked)["approval_id"])
    with committed():
        decide_approval(approval, user=owner, approve=True)
    approval.refresh_from_db()
    return approval


def test_an_approved_call_that_spends_money_still_meets_a_spent_budget(
    client: Client, raw_key: str, priced: AIModel, owner: Any, committed: Committed
) -> None:
    with committed():
        route_to("chat", priced, spends_money=True)
        Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal(0))
    approval = ask_and_approve(client, raw_key, owner, committed)

    response = post(client, {"messages": HELLO}, raw_key, {"X-Approval-Id": str(approval.pk)})

    assert response.status_code == 429
    assert error_of(response)["code"] == "budget_exceeded"
    assert not Reservation.objects.exists()
    approval.refresh_from_db()
    assert approval.outcome == ""  # no call was made with it


def test_an_approved_call_over_its_threshold_that_would_pass_a_budget_asks_for_that_too(
    client: Client, raw_key: str, priced: AIModel, owner: Any, committed: Committed
) -> None:
    with committed():
        route_to("chat", priced, approval_threshold=Decimal("0.0001"))
        Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal("0.001"))
    threshold = ask_and_approve(client, raw_key, owner, committed)
    assert threshold.proposal["rule"] == "over_threshold"

    past_budget = post(client, {"messages": HELLO}, raw_key, {"X-Approval-Id": str(threshold.pk)})

    assert past_budget.status_code == 403
    error = error_of(past_budget)
    assert error["rule"] == "over_budget"
    assert error["approval_id"] != threshold.pk
    assert not Reservation.objects.exists()
    over_budget = Approval.objects.get(pk=error["approval_id"])
    with committed():
        decide_approval(over_budget, user=owner, approve=True)

    through = post(client, {"messages": HELLO}, raw_key, {"X-Approval-Id": str(over_budget.pk)})

    assert through.status_code == 200
    assert Reservation.objects.get().approved
    assert_books_whole()


def test_an_approval_is_used_up_only_by_a_call_a_provider_answered(
    client: Client,
    raw_key: str,
    priced: AIModel,
    budget: Budget,
    owner: Any,
    upstream: OpenAIServer,
    committed: Committed,
) -> None:
    with committed():
        route_to("chat", priced, spends_money=True)
    approval = ask_and_approve(client, raw_key, owner, committed)
    upstream.reply(Failure(500, "upstream exploded"))
    approved = {"X-Approval-Id": str(approval.pk)}

    failed = post(client, {"messages": HELLO}, raw_key, approved)

    assert failed.status_code == 502
    approval.refresh_from_db()
    assert approval.outcome == ""

    through = post(client, {"messages": HELLO}, raw_key, approved)

    assert through.status_code == 200
    approval.refresh_from_db()
    assert f"Used by call {through['X-Request-Id']}" in approval.outcome
    assert post(client, {"messages": HELLO}, raw_key, approved).status_code == 403
    assert_books_whole()


def test_a_streamed_approved_call_uses_its_approval_once_answered(
    client: Client,
    raw_key: str,
    priced: AIModel,
    budget: Budget,
    owner: Any,
    committed: Committed,
) -> None:
    with committed():
        route_to("chat", priced, spends_money=True)
    approval = ask_and_approve(client, raw_key, owner, committed)

    response = post(
        client, {"messages": HELLO, "stream": True}, raw_key, {"X-Approval-Id": str(approval.pk)}
    )

    assert sse_data(sse_text(response))[-1] == "[DONE]"
    approval.refresh_from_db()
    assert approval.outcome.startswith(f"Used by call {response['X-Request-Id']}")
