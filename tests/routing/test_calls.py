"""The call path against a real local OpenAI-compatible server: kill switches, the
route with its fallbacks and cooldowns, exact cost, budget reservations settled or
released, refusals in the log, and streaming (fallback before the first chunk, a
priced failure after it, a client that goes away)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.core.cache import cache

from controlplane.models import FeatureToggle
from controlplane.money import MoneySum
from routing import calls, pricing, router
from routing.budgets import budget_day
from routing.call_refusals import CallFailed, FeatureOff, NotRoutable, OverBudget
from routing.calls import CALLER_WENT_AWAY, CallContext, CallResult
from routing.models import AIModel, Budget, BudgetDay, OperationLog, Provider, Reservation
from routing.providers import StreamChunk
from routing.router import cool_down, cooldown_key, route
from tests.routing import factories
from tests.routing.openai_server import (
    Answer,
    Disconnect,
    Failure,
    OpenAIServer,
    Stream,
    chunk,
)

MESSAGES = [{"role": "user", "content": "Summarize the deploy logs"}]
PRIMARY, FALLBACK = "test/primary", "test/fallback"


@pytest.fixture
def server() -> Any:
    with OpenAIServer() as running:
        yield running


@pytest.fixture
def local(db: Any, server: OpenAIServer) -> Provider:
    return factories.provider(server, name="local")


@pytest.fixture
def primary(local: Provider) -> AIModel:
    return factories.model(local, PRIMARY, prompt="0.000001", completion="0.000002")


@pytest.fixture
def fallback(local: Provider) -> AIModel:
    return factories.model(local, FALLBACK, prompt="0.0000005", completion="0.000001")


@pytest.fixture
def report(primary: AIModel, fallback: AIModel) -> Any:
    return factories.route("report", primary, fallback)


@pytest.fixture
def everything(db: Any) -> Budget:
    return factories.budget("10")


def complete(operation: str = "report", **context: Any) -> CallResult:
    return calls.complete(CallContext(operation, **context), MESSAGES, max_tokens=100)


def models_asked(server: OpenAIServer) -> list[str]:
    return [request.json["model"] for request in server.requests]


def ledger(budget: Budget) -> BudgetDay:
    return BudgetDay.objects.get(budget=budget, day=budget_day())


def switch(key: str, enabled: bool, capture: Any) -> None:
    with capture(execute=True):  # the toggle's cache is published on commit
        FeatureToggle.objects.update_or_create(key=key, defaults={"enabled": enabled})


def read_stream(call: calls.StreamingCall) -> tuple[list[StreamChunk], CallResult]:
    items = list(call)
    assert isinstance(items[-1], CallResult)
    assert all(isinstance(item, StreamChunk) for item in items[:-1])
    return items[:-1], items[-1]  # type: ignore[return-value]


def read_until_failure(call: calls.StreamingCall) -> tuple[list[StreamChunk], CallFailed]:
    """The chunks a stream gave before it failed, and the failure."""
    received: list[StreamChunk] = []
    try:
        for item in call:
            assert isinstance(item, StreamChunk), "no result after a failure"
            received.append(item)
    except CallFailed as exc:
        return received, exc
    raise AssertionError("the stream did not fail")


def text_of(chunks: list[StreamChunk]) -> str:
    return "".join(c.content for c in chunks)


# A call.


@pytest.mark.django_db
def test_a_call_is_answered_priced_from_the_catalog_and_logged(report, server, operator):
    server.reply(Answer("All green.", usage={"prompt_tokens": 1000, "completion_tokens": 500}))
    context = CallContext("report", user=operator, service="ops-bot")

    result = calls.complete(context, MESSAGES, max_tokens=100)

    assert result.completion.content == "All green."
    assert result.model.model_id == PRIMARY
    # 1000 x 0.000001 + 500 x 0.000002
    assert result.cost == Decimal("0.002")
    assert result.cost_source == "catalog"
    row = OperationLog.objects.get()
    assert row == result.log
    assert (row.request_id, row.operation, row.user, row.service) == (
        context.request_id,
        "report",
        operator,
        "ops-bot",
    )
    assert (row.model_requested, row.model_used, row.provider) == (PRIMARY, PRIMARY, "local")
    assert not row.fallback_used
    assert not row.stream
    assert (row.prompt_tokens, row.completion_tokens) == (1000, 500)
    assert (row.cost, row.cost_source, row.status, row.error) == (
        Decimal("0.002"),
        "catalog",
        "ok",
        "",
    )
    assert [(a["model"], a["outcome"]) for a in row.attempts] == [(PRIMARY, "ok")]
    sent = server.requests[0]
    assert sent.json["model"] == PRIMARY
    assert sent.json["messages"] == MESSAGES
    assert sent.json["max_tokens"] == 100
    assert sent.headers["authorization"] == f"Bearer {factories.LOCAL_API_KEY}"


@pytest.mark.django_db
def test_the_cost_the_provider_reports_wins_over_the_catalog(report, server):
    server.reply(
        Answer(
            "ok",
            usage={"prompt_tokens": 1000, "completion_tokens": 500},
            cost="0.000123456789012345",
        )
    )

    result = complete()

    assert result.cost == Decimal("0.000123456789012345")
    assert (result.log.cost, result.log.cost_source) == (result.cost, "provider")


@pytest.mark.django_db
def test_tools_and_other_openai_fields_reach_the_provider(report, server):
    tools = [{"type": "function", "function": {"name": "search", "parameters": {}}}]

    calls.complete(
        CallContext("report"), MESSAGES, tools=tools, extra={"temperature": 0.2, "seed": 7}
    )

    sent = server.requests[0].json
    assert sent["tools"] == tools
    assert (sent["temperature"], sent["seed"]) == (Decimal("0.2"), 7)


@pytest.mark.django_db
def test_the_seeded_chat_route_answers_offline_for_free(everything):
    result = complete("chat")

    assert result.model.model_id == "offline/echo"
    assert "Summarize the deploy logs" in result.completion.content
    assert (result.cost, result.cost_source) == (Decimal(0), "offline")
    assert ledger(everything).spent == 0
    assert ledger(everything).reserved == 0


# Budgets: reserved before, settled or released after.


@pytest.mark.django_db
def test_a_call_reserves_its_estimate_and_settles_to_the_actual_cost(report, server, everything):
    server.reply(Answer("ok", cost="0.0004"))
    estimate = route(
        "report", estimated_tokens=pricing.estimate_prompt_tokens(MESSAGES), completion_tokens=100
    ).estimated_cost

    result = complete()

    reservation = Reservation.objects.get(request_id=result.log.request_id)
    assert reservation.amount == estimate
    assert (reservation.status, reservation.actual) == ("settled", Decimal("0.0004"))
    assert not reservation.approved
    assert (ledger(everything).spent, ledger(everything).reserved) == (Decimal("0.0004"), 0)


@pytest.mark.django_db
def test_a_failed_call_releases_its_reservation_and_costs_nothing(report, server, everything):
    server.reply(Failure(500, "down"), Failure(502, "still down"))

    with pytest.raises(CallFailed) as failed:
        complete()

    assert failed.value.status == 502
    assert str(failed.value).startswith("Every model failed for 'report': ")
    reservation = Reservation.objects.get()
    assert reservation.status == Reservation.Status.RELEASED
    assert (ledger(everything).spent, ledger(everything).reserved) == (0, 0)
    row = OperationLog.objects.get()
    assert (row.status, row.cost, row.cost_source, row.model_used) == ("error", 0, "none", "")
    assert row.error == str(failed.value)
    assert [(a["model"], a["outcome"], a["status"]) for a in row.attempts] == [
        (PRIMARY, "error", 500),
        (FALLBACK, "error", 502),
    ]


# Fallbacks and cooldowns.


@pytest.mark.django_db
def test_a_failing_model_is_cooled_down_and_its_fallback_answers(report, server, everything):
    server.reply(Failure(500, "upstream exploded"), model=PRIMARY)
    server.reply(Answer("From the fallback.", cost="0.0001"), model=FALLBACK)

    result = complete()

    assert result.completion.content == "From the fallback."
    assert result.model.model_id == FALLBACK
    row = result.log
    assert (row.model_requested, row.model_used, row.fallback_used) == (PRIMARY, FALLBACK, True)
    assert [(a["model"], a["outcome"]) for a in row.attempts] == [
        (PRIMARY, "error"),
        (FALLBACK, "ok"),
    ]
    assert row.attempts[0]["status"] == 500
    assert "upstream exploded" in row.attempts[0]["error"]
    assert ledger(everything).spent == Decimal("0.0001")

    # The next call does not ask the cooled-down model.
    complete()
    assert models_asked(server) == [PRIMARY, FALLBACK, FALLBACK]


class CacheSettings:
    """The cache, recording the timeout of every key set through it."""

    def __init__(self) -> None:
        self.timeouts: dict[str, Any] = {}

    def set(self, key: str, value: Any, timeout: Any = None, **kwargs: Any) -> Any:
        self.timeouts[key] = timeout
        return cache.set(key, value, timeout, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(cache, name)


@pytest.mark.django_db
def test_a_rate_limited_model_is_cooled_down_for_as_long_as_retry_after_says(
    report, server, monkeypatch
):
    recorded = CacheSettings()
    monkeypatch.setattr(router, "cache", recorded)
    server.reply(Failure(429, "slow down", headers={"Retry-After": "1"}), model=PRIMARY)

    assert complete().model.model_id == FALLBACK
    assert complete().model.model_id == FALLBACK
    primary = AIModel.objects.get(model_id=PRIMARY)
    # Retry-After's 1 s, not MODEL_COOLDOWN_SECONDS (60); then the cache entry expires.
    assert recorded.timeouts == {cooldown_key(primary.pk): 1}
    cache.delete(cooldown_key(primary.pk))
    assert complete().model.model_id == PRIMARY

    assert models_asked(server) == [PRIMARY, FALLBACK, FALLBACK, PRIMARY]
    first = OperationLog.objects.order_by("pk").first()
    assert first is not None
    assert first.attempts[0]["status"] == 429
    assert "retry after 1 s" in first.attempts[0]["error"]


@pytest.mark.django_db
def test_when_every_model_is_cooling_down_they_are_tried_anyway(report, server):
    for choice in route("report").candidates:
        cool_down(choice)
    server.reply(Failure(503, "busy"), model=PRIMARY)

    result = complete()

    assert result.model.model_id == FALLBACK
    assert models_asked(server) == [PRIMARY, FALLBACK]


@pytest.mark.django_db
def test_a_non_retryable_error_does_not_fall_back_nor_cool_the_model_down(
    report, server, primary, everything
):
    server.reply(Failure(401, "invalid api key"), model=PRIMARY)

    with pytest.raises(CallFailed) as failed:
        complete()

    assert failed.value.status == 401
    assert models_asked(server) == [PRIMARY]
    assert cache_has_cooldown(primary) is False
    row = OperationLog.objects.get()
    assert (row.status, row.model_used, row.fallback_used) == ("error", "", False)
    assert [(a["model"], a["status"]) for a in row.attempts] == [(PRIMARY, 401)]
    assert Reservation.objects.get().status == Reservation.Status.RELEASED
    assert (ledger(everything).spent, ledger(everything).reserved) == (0, 0)


def cache_has_cooldown(model: AIModel) -> bool:
    return cache.get(cooldown_key(model.pk)) is not None


@pytest.mark.django_db
def test_a_call_sent_to_the_ab_model_is_logged_as_the_ab_variant(primary, fallback, server):
    factories.route("report", primary, ab_model=fallback, ab_percent=100)

    result = complete()

    assert result.model.model_id == FALLBACK
    assert (result.log.model_requested, result.log.model_used) == (FALLBACK, FALLBACK)
    assert result.log.ab_variant
    assert not result.log.fallback_used


# Exact cost.

# Eighteen decimal places and up to 18 significant digits: more than a float or
# SQLite's REAL column keeps.
EXACT_COSTS = [Decimal(f"0.{n:02d}3456789012345678") for n in range(1, 41)]
# Fifteen significant digits: the most a SQLite REAL column gives back unchanged.
SQLITE_SAFE_COSTS = [Decimal(f"0.000123456789012{n:03d}") for n in range(1, 41)]


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_sum_of_the_log_equals_the_sum_of_the_reported_costs_to_the_last_digit(
    report, server, everything
):
    server.reply(*(Answer("ok", cost=cost) for cost in EXACT_COSTS))

    for _ in EXACT_COSTS:
        complete()

    expected = sum(EXACT_COSTS, Decimal(0))
    assert OperationLog.objects.aggregate(total=MoneySum("cost"))["total"] == expected
    assert sorted(OperationLog.objects.values_list("cost", flat=True)) == sorted(EXACT_COSTS)
    # The budget's ledger, added to in SQL one settlement at a time, is exact too.
    assert ledger(everything).spent == expected


@pytest.mark.django_db
def test_each_logged_cost_is_the_reported_cost_to_the_last_digit(report, server):
    # SQLite stores a DecimalField as REAL and gives back 15 significant digits, and
    # sums in floating point, so there only rows of at most 15 significant digits are
    # exact, and only when added up in Python. The test above checks the database's
    # own sum, with more digits, on PostgreSQL.
    server.reply(*(Answer("ok", cost=cost) for cost in SQLITE_SAFE_COSTS))

    for _ in SQLITE_SAFE_COSTS:
        complete()

    logged = list(OperationLog.objects.order_by("pk").values_list("cost", flat=True))
    assert logged == SQLITE_SAFE_COSTS
    assert sum(logged, Decimal(0)) == sum(SQLITE_SAFE_COSTS, Decimal(0))


# Refusals and kill switches.


@pytest.mark.django_db
def test_an_operation_switched_off_is_refused_and_the_refusal_logged(
    server, django_capture_on_commit_callbacks, operator
):
    switch("operation.chat.enabled", False, django_capture_on_commit_callbacks)
    context = CallContext("chat", user=operator)

    with pytest.raises(FeatureOff) as refused:
        calls.complete(context, MESSAGES, model_requested="gpt-4o")

    assert refused.value.status == 503
    assert str(refused.value) == (
        "Operation 'chat' is switched off (toggle operation.chat.enabled)."
    )
    row = OperationLog.objects.get()
    assert (row.request_id, row.operation, row.user) == (context.request_id, "chat", operator)
    assert (row.status, row.cost, row.cost_source, row.model_requested) == (
        "refused",
        0,
        "none",
        "gpt-4o",
    )
    assert row.error == f"feature_off: {refused.value}"
    assert not Reservation.objects.exists()

    switch("operation.chat.enabled", True, django_capture_on_commit_callbacks)
    assert complete("chat").log.status == "ok"


@pytest.mark.django_db
def test_a_call_against_a_used_up_budget_is_refused_naming_the_budget_and_logged(
    report, server, operator
):
    mine = factories.budget("0.01", Budget.Scope.USER, user=operator)
    BudgetDay.objects.create(
        budget=mine, day=budget_day(), limit=mine.daily_limit, spent=mine.daily_limit
    )

    with pytest.raises(OverBudget) as refused:
        complete(user=operator)

    assert refused.value.status == 429
    assert refused.value.details["budget"] == "user oscar-operator budget"
    assert Decimal(refused.value.details["limit"]) == Decimal("0.01")
    assert Decimal(refused.value.details["spent"]) == Decimal("0.01")
    assert "resets at" in str(refused.value)
    assert server.requests == []
    row = OperationLog.objects.get()
    assert (row.status, row.cost, row.user) == ("refused", 0, operator)
    assert row.error.startswith("budget_exceeded: The user oscar-operator budget is used up")
    assert ledger(mine).reserved == 0


@pytest.mark.django_db
def test_the_gateway_switch_refuses_only_calls_that_come_through_the_gateway(
    report, server, django_capture_on_commit_callbacks
):
    switch("gateway.enabled", False, django_capture_on_commit_callbacks)

    with pytest.raises(FeatureOff, match=r"gateway is switched off"):
        complete(via_gateway=True)

    assert complete().log.status == "ok"
    assert models_asked(server) == [PRIMARY]


@pytest.mark.django_db
def test_an_operation_with_no_route_is_refused_as_not_routable_and_logged():
    with pytest.raises(NotRoutable) as refused:
        complete("nowhere")

    assert refused.value.status == 404
    assert refused.value.details == {"reason": "unknown_operation"}
    row = OperationLog.objects.get()
    assert (row.operation, row.status, row.cost) == ("nowhere", "refused", 0)
    assert row.error.startswith("not_routable: No route for operation 'nowhere'")


@pytest.mark.django_db
def test_a_route_whose_models_are_all_unpriced_is_refused_and_logged(local):
    factories.route("report", factories.model(local, "test/unpriced", prompt=None))

    with pytest.raises(NotRoutable, match="price missing") as refused:
        complete()

    assert refused.value.details == {"reason": "no_model_available"}
    assert OperationLog.objects.get().status == "refused"


# Streaming.


@pytest.mark.django_db
def test_a_stream_yields_chunks_then_one_result_and_is_logged_with_its_cost(
    report, server, everything
):
    server.reply(Answer("The deploy went out cleanly", cost="0.000123456789012345"))

    call = calls.stream(CallContext("report"), MESSAGES, max_tokens=100)
    chunks, result = read_stream(call)

    assert text_of(chunks) == "The deploy went out cleanly"
    assert call.decision.model.model_id == PRIMARY
    assert result.completion.content == "The deploy went out cleanly"
    assert result.cost == Decimal("0.000123456789012345")
    row = OperationLog.objects.get()
    assert row == result.log
    assert (row.stream, row.status, row.cost_source) == (True, "ok", "provider")
    assert server.requests[0].json["stream"] is True
    assert ledger(everything).spent == Decimal("0.000123456789012345")
    assert ledger(everything).reserved == 0


@pytest.mark.django_db
def test_a_stream_that_fails_before_its_first_chunk_falls_back(report, server):
    server.reply(Failure(500, "down"), model=PRIMARY)
    server.reply(Answer("Fallback speaking"), model=FALLBACK)

    chunks, result = read_stream(calls.stream(CallContext("report"), MESSAGES))

    assert text_of(chunks) == "Fallback speaking"
    assert (result.log.model_requested, result.log.model_used) == (PRIMARY, FALLBACK)
    assert result.log.fallback_used


@pytest.mark.django_db
def test_a_stream_whose_connection_drops_before_it_answers_falls_back(report, server):
    server.reply(Disconnect(), model=PRIMARY)

    chunks, result = read_stream(calls.stream(CallContext("report"), MESSAGES))

    assert result.model.model_id == FALLBACK
    assert text_of(chunks) == "ok"


@pytest.mark.django_db
def test_a_stream_that_fails_after_chunks_ends_with_call_failed_and_the_part_streamed_is_priced(
    report, server, everything
):
    events = (
        ": OPENROUTER PROCESSING",
        chunk("", role="assistant"),
        chunk("The deploy "),
        chunk("went out and then"),
    )
    server.reply(Stream(events, drop_after=len(events)), model=PRIMARY)
    call = calls.stream(CallContext("report"), MESSAGES, max_tokens=100)

    received, failed = read_until_failure(call)

    assert text_of(received) == "The deploy went out and then"
    assert models_asked(server) == [PRIMARY], "no silent switch of model mid-answer"
    assert "dropped" in str(failed)
    row = OperationLog.objects.get()
    assert (row.status, row.model_used, row.fallback_used, row.stream) == (
        "error",
        PRIMARY,
        False,
        True,
    )
    assert row.error == str(failed)
    # What was streamed is paid for: estimated tokens at the catalog's prices.
    assert row.prompt_tokens == pricing.estimate_prompt_tokens(MESSAGES)
    assert row.completion_tokens > 0
    assert row.cost_source == "catalog"
    assert row.cost == row.prompt_tokens * Decimal("0.000001") + row.completion_tokens * Decimal(
        "0.000002"
    )
    assert Reservation.objects.get().status == Reservation.Status.SETTLED
    assert (ledger(everything).spent, ledger(everything).reserved) == (row.cost, 0)


@pytest.mark.django_db
def test_an_error_event_inside_a_200_stream_after_chunks_ends_the_stream(report, server):
    events = (chunk("Partial "), {"error": {"message": "upstream overloaded", "code": 502}})
    server.reply(Stream(events), model=PRIMARY)

    with pytest.raises(CallFailed, match="upstream overloaded"):
        list(calls.stream(CallContext("report"), MESSAGES))

    row = OperationLog.objects.get()
    assert (row.status, row.model_used) == ("error", PRIMARY)
    assert row.cost > 0
    assert models_asked(server) == [PRIMARY]


@pytest.mark.django_db
def test_a_stream_whose_every_model_fails_before_answering_releases_its_reservation(
    report, server, everything
):
    server.reply(Failure(500, "down"), Failure(500, "down too"))

    with pytest.raises(CallFailed):
        list(calls.stream(CallContext("report"), MESSAGES))

    assert Reservation.objects.get().status == Reservation.Status.RELEASED
    assert (ledger(everything).spent, ledger(everything).reserved) == (0, 0)
    row = OperationLog.objects.get()
    assert (row.status, row.cost, row.model_used) == ("error", 0, "")


@pytest.mark.django_db
def test_a_client_that_goes_away_mid_stream_is_logged_and_what_was_streamed_settled(
    report, server, everything
):
    server.reply(Answer("one two three four five six seven eight", cost="0.0009"))
    call = calls.stream(CallContext("report"), MESSAGES, max_tokens=100)
    received = []
    for item in call:
        assert isinstance(item, StreamChunk)
        received.append(item)
        if item.content:
            break

    call.events.close()  # what the server does when the client disconnects

    assert text_of(received) == "one "
    row = OperationLog.objects.get()
    assert (row.status, row.error, row.model_used, row.stream) == (
        "cancelled",
        CALLER_WENT_AWAY,
        PRIMARY,
        True,
    )
    assert row.cost > 0
    assert Reservation.objects.get().status == Reservation.Status.SETTLED
    assert (ledger(everything).spent, ledger(everything).reserved) == (row.cost, 0)


@pytest.mark.django_db
def test_a_client_that_goes_away_before_the_first_chunk_is_logged_and_its_reservation_released(
    report, server, everything
):
    call = calls.stream(CallContext("report"), MESSAGES, max_tokens=100)

    call.events.close()

    row = OperationLog.objects.get()
    assert (row.status, row.stream, row.cost) == ("cancelled", True, 0)
    assert row.error == CALLER_WENT_AWAY
    assert Reservation.objects.get().status == Reservation.Status.RELEASED
    assert (ledger(everything).spent, ledger(everything).reserved) == (0, 0)
    assert server.requests == []


@pytest.mark.django_db
def test_a_refused_stream_raises_before_anything_streams(
    report, server, django_capture_on_commit_callbacks
):
    switch("operation.report.enabled", False, django_capture_on_commit_callbacks)

    with pytest.raises(FeatureOff):
        calls.stream(CallContext("report"), MESSAGES)

    assert server.requests == []
    assert OperationLog.objects.get().status == "refused"
