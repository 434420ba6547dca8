"""`route()`: the decision (model, fallbacks, exact estimate, approval, budgets), the
policies per mode, the cached routing table and its invalidation, cooldowns and A/B
splits."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from routing import snapshots
from routing.approval_rules import Rule
from routing.models import AIModel, Budget, Policy, Provider, Route, RouteFallback
from routing.router import (
    NoModelAvailable,
    UnknownMode,
    UnknownOperation,
    cool_down,
    cooldown_key,
    route,
)
from tests.routing import factories


@pytest.fixture
def local(db: Any) -> Provider:
    return factories.provider(name="local")


@pytest.fixture
def cheap(local: Provider) -> AIModel:
    # 0.0015 per 1k tokens, prompt and completion averaged.
    return factories.model(local, "test/cheap", prompt="0.000001", completion="0.000002")


@pytest.fixture
def dear(local: Provider) -> AIModel:
    # 0.00625 per 1k tokens: over the seeded ops policy's 0.005.
    return factories.model(local, "test/dear", prompt="0.0000025", completion="0.00001")


@pytest.fixture
def spare(local: Provider) -> AIModel:
    return factories.model(local, "test/spare", prompt="0.0000005", completion="0.0000015")


def route_table_queries(captured: CaptureQueriesContext) -> list[str]:
    tables = ("routing_route", "routing_routefallback", "routing_policy", "routing_aimodel")
    return [q["sql"] for q in captured.captured_queries if any(t in q["sql"] for t in tables)]


def model_ids(decision: Any) -> list[str]:
    return [choice.model_id for choice in decision.candidates]


# The decision.


@pytest.mark.django_db
def test_it_returns_the_primary_model_its_fallbacks_in_order_and_an_exact_estimate(
    dear, cheap, spare
):
    factories.route("report", dear, spare, cheap)

    decision = route("report", estimated_tokens=1000, completion_tokens=500)

    assert decision.model.model_id == "test/dear"
    assert [m.model_id for m in decision.fallbacks] == ["test/spare", "test/cheap"]
    # 1000 x 0.0000025 + 500 x 0.00001, to the last digit.
    assert decision.estimated_cost == Decimal("0.0075")
    assert isinstance(decision.estimated_cost, Decimal)
    assert (decision.prompt_tokens, decision.completion_tokens) == (1000, 500)
    assert not decision.needs_approval
    assert decision.approval is None
    assert decision.budgets == []
    assert decision.skipped == []


@pytest.mark.django_db
def test_the_estimate_counts_the_default_completion_tokens_and_the_per_request_price(
    local, settings
):
    settings.DEFAULT_COMPLETION_TOKENS = 200
    priced = factories.model(
        local,
        "test/per-request",
        prompt="0.000000075",
        completion="0.0000003",
        price_reasoning="0.0000011",
        price_request="0.0005",
    )
    factories.route("classify", priced)

    decision = route("classify", estimated_tokens=3)

    # 3 x 0.000000075 + 200 x 0.0000011 (the dearer output price) + 0.0005 per request.
    assert decision.estimated_cost == Decimal("0.000720225")


@pytest.mark.django_db
def test_the_seeded_chat_route_answers_with_the_offline_model_for_free():
    decision = route("chat", estimated_tokens=5_000)

    assert decision.model.model_id == "offline/echo"
    assert decision.model.is_offline
    assert decision.estimated_cost == Decimal(0)
    assert decision.mode == "normal"
    assert decision.describe()["provider"] == "offline"


@pytest.mark.django_db
def test_the_decision_lists_every_budget_that_applies_to_the_call_and_no_other(
    cheap, operator, owner
):
    factories.route("report", cheap)
    everything = factories.budget("100")
    mine = factories.budget("10", Budget.Scope.USER, user=operator)
    factories.budget("10", Budget.Scope.USER, user=owner)
    this_operation = factories.budget("5", Budget.Scope.OPERATION, operation="report")
    factories.budget("5", Budget.Scope.OPERATION, operation="chat")
    this_service = factories.budget("2", Budget.Scope.SERVICE, service="billing")
    factories.budget("2", Budget.Scope.SERVICE, service="search")
    factories.budget("1", Budget.Scope.SERVICE, service="billing-old", enabled=False)

    decision = route("report", user=operator, service="billing", estimated_tokens=10)

    assert decision.budgets == [everything, mine, this_operation, this_service]
    assert decision.describe()["budgets"] == [
        "global budget",
        "user oscar-operator budget",
        "operation report budget",
        "service billing budget",
    ]


@pytest.mark.django_db
def test_it_describes_the_decision_with_the_cost_as_exact_text_not_a_float(dear, cheap):
    factories.route("report", dear, cheap, approval_threshold="0.001")

    described = route("report", estimated_tokens=1000, completion_tokens=500).describe()

    assert described["model"] == "test/dear"
    assert described["provider"] == "local"
    assert described["fallbacks"] == ["test/cheap"]
    assert Decimal(described["estimated_cost"]) == Decimal("0.0075")
    assert described["needs_approval"] is True
    assert described["approval_rule"] == "over_threshold"
    assert "$0.0075" in described["approval_reason"]


@pytest.mark.django_db
def test_an_unknown_operation_says_how_to_add_a_route():
    with pytest.raises(UnknownOperation, match=r"No route for operation 'nope'.*Control > Routes"):
        route("nope")


@pytest.mark.django_db
def test_an_unknown_mode_lists_the_modes_there_are():
    with pytest.raises(UnknownMode, match=r"'turbo'.*code, deep_research, normal, ops"):
        route("chat", "turbo")


# Policies per mode.


@pytest.mark.django_db
def test_a_mode_leaves_out_models_over_its_price_per_1k_tokens(dear, cheap):
    factories.route("report", dear, cheap)

    decision = route("report", "ops", estimated_tokens=100)

    assert model_ids(decision) == ["test/cheap"]
    assert decision.mode == "ops"
    assert decision.skipped == ["test/dear: over the policy's $0.005/1k tokens"]


@pytest.mark.django_db
def test_the_routes_own_policy_applies_when_the_call_names_no_mode(dear, cheap):
    factories.route("report", dear, cheap, policy="ops")

    decision = route("report", estimated_tokens=100)

    assert decision.mode == "ops"
    assert model_ids(decision) == ["test/cheap"]


@pytest.mark.django_db
def test_a_mode_leaves_out_every_model_when_the_prompt_is_over_its_max_context(cheap, spare):
    factories.route("report", cheap, spare)

    with pytest.raises(NoModelAvailable) as refused:
        route("report", "ops", estimated_tokens=150_000)

    assert str(refused.value) == (
        "No model can serve 'report': test/cheap: policy max context 128000; "
        "test/spare: policy max context 128000"
    )
    assert model_ids(route("report", "deep_research", estimated_tokens=150_000)) == [
        "test/cheap",
        "test/spare",
    ]


@pytest.mark.django_db
def test_a_model_whose_context_is_too_small_for_the_prompt_is_left_out(local, cheap):
    small = factories.model(local, "test/small", context_length=4096)
    factories.route("report", small, cheap)

    decision = route("report", estimated_tokens=5000)

    assert model_ids(decision) == ["test/cheap"]
    assert decision.skipped == ["test/small: context 4096 < 5000 tokens"]


@pytest.mark.django_db
def test_a_mode_puts_its_preferred_model_first(cheap, spare, dear):
    factories.route("report", cheap, spare, dear)
    Policy.objects.filter(mode="code").update(preferred_model=dear)

    assert model_ids(route("report", "code", estimated_tokens=10)) == [
        "test/dear",
        "test/cheap",
        "test/spare",
    ]
    assert model_ids(route("report", "normal", estimated_tokens=10)) == [
        "test/cheap",
        "test/spare",
        "test/dear",
    ]


@pytest.mark.django_db
def test_a_mode_puts_the_models_of_its_preferred_provider_first_keeping_their_order(cheap, spare):
    other = factories.provider(name="other")
    first = factories.model(other, "other/first")
    second = factories.model(other, "other/second")
    factories.route("report", cheap, first, spare, second)
    Policy.objects.filter(mode="code").update(preferred_provider=other)

    assert model_ids(route("report", "code", estimated_tokens=10)) == [
        "other/first",
        "other/second",
        "test/cheap",
        "test/spare",
    ]


# Models that cannot serve.


@pytest.mark.django_db
def test_a_model_missing_a_price_is_skipped_and_flagged_never_priced_at_zero(local, cheap):
    unpriced = factories.model(local, "test/unpriced", completion=None)
    factories.route("report", unpriced, cheap)

    decision = route("report", estimated_tokens=1000, completion_tokens=1000)

    assert decision.model.model_id == "test/cheap"
    assert decision.estimated_cost == Decimal("0.003")
    assert decision.skipped == [
        "test/unpriced: price missing: no completion price (flagged in the catalog)"
    ]


@pytest.mark.django_db
def test_no_model_available_explains_why_each_model_was_left_out(local):
    unpriced = factories.model(local, "test/unpriced", prompt=None, completion=None)
    retired = factories.model(local, "test/retired", active=False)
    switched_off = factories.provider(name="switched-off", enabled=False)
    unreachable = factories.model(switched_off, "off/model")
    factories.route("report", unpriced, retired, unreachable)

    with pytest.raises(NoModelAvailable) as refused:
        route("report", estimated_tokens=10)

    assert refused.value.code == "no_model_available"
    assert str(refused.value) == (
        "No model can serve 'report': test/unpriced: price missing: no prompt and completion "
        "price (flagged in the catalog); test/retired: inactive; off/model: inactive"
    )


# The cached routing table.


@pytest.mark.django_db
def test_a_second_route_call_reads_the_route_table_from_memory(
    cheap, spare, django_assert_num_queries
):
    factories.route("report", cheap, spare, policy="normal")
    with CaptureQueriesContext(connection) as first:
        route("report", estimated_tokens=10)
    assert route_table_queries(first), "the first call loads the table"

    # With no budgets, nothing is left to read: the enabled budgets are part of
    # the cached table (a budget change invalidates it like a route change).
    with django_assert_num_queries(0):
        decision = route("report", estimated_tokens=10)

    assert model_ids(decision) == ["test/cheap", "test/spare"]


def test_a_new_budget_applies_to_the_next_route_call(cheap, django_capture_on_commit_callbacks):
    factories.route("report", cheap, policy="normal")
    assert route("report", estimated_tokens=10).budgets == []
    with django_capture_on_commit_callbacks(execute=True):
        budget = Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal("5"))
    assert route("report", estimated_tokens=10).budgets == [budget]


@pytest.mark.django_db
def test_a_change_to_a_routes_primary_model_is_seen_by_the_next_call_once_it_commits(
    cheap, spare, django_capture_on_commit_callbacks
):
    report = factories.route("report", cheap)
    assert route("report").model.model_id == "test/cheap"

    with django_capture_on_commit_callbacks(execute=True):
        report.primary_model = spare
        report.save()

    assert route("report").model.model_id == "test/spare"


@pytest.mark.django_db
def test_fallbacks_added_or_removed_are_seen_by_the_next_call(
    cheap, spare, dear, django_capture_on_commit_callbacks
):
    report = factories.route("report", cheap, spare)
    assert model_ids(route("report")) == ["test/cheap", "test/spare"]

    with django_capture_on_commit_callbacks(execute=True):
        RouteFallback.objects.create(route=report, model=dear, position=0)
        RouteFallback.objects.get(route=report, model=spare).delete()

    assert model_ids(route("report")) == ["test/cheap", "test/dear"]


@pytest.mark.django_db
def test_a_policy_or_catalog_change_is_seen_by_the_next_call(
    cheap, dear, django_capture_on_commit_callbacks
):
    factories.route("report", dear, cheap)
    assert route("report", "ops").model.model_id == "test/cheap"

    with django_capture_on_commit_callbacks(execute=True):
        ops = Policy.objects.get(mode="ops")
        ops.max_price_per_1k = Decimal("0.01")
        ops.save()
    assert route("report", "ops").model.model_id == "test/dear"

    with django_capture_on_commit_callbacks(execute=True):
        dear.active = False
        dear.save()
    assert route("report", "ops").model.model_id == "test/cheap"


@pytest.mark.django_db
def test_a_change_made_by_another_process_is_seen_once_it_bumps_the_shared_version(cheap, spare):
    factories.route("report", cheap)
    assert route("report").model.model_id == "test/cheap"
    # Another process changes the route: its row (no signal here) and, on commit, the
    # version number in the cache every process shares.
    Route.objects.filter(operation="report").update(primary_model=spare)
    assert route("report").model.model_id == "test/cheap", "still the cached table"

    cache.set(snapshots.VERSION_KEY, uuid.uuid4().hex, None)

    assert route("report").model.model_id == "test/spare"


@pytest.mark.django_db
def test_the_table_is_reloaded_once_it_is_older_than_the_cache_ttl(cheap, spare, monkeypatch):
    factories.route("report", cheap)
    assert route("report").model.model_id == "test/cheap"
    # A change whose invalidation was lost: only the 5-minute TTL brings it in.
    Route.objects.filter(operation="report").update(primary_model=spare)
    loaded_at = snapshots.routing_table().loaded_at

    monkeypatch.setattr(snapshots.time, "monotonic", lambda: loaded_at + 299)
    assert route("report").model.model_id == "test/cheap"

    monkeypatch.setattr(snapshots.time, "monotonic", lambda: loaded_at + 301)
    assert route("report").model.model_id == "test/spare"


@pytest.mark.django_db
def test_a_zero_ttl_reloads_the_table_on_every_call(cheap, spare, settings):
    settings.ROUTE_CACHE_SECONDS = 0
    factories.route("report", cheap)
    assert route("report").model.model_id == "test/cheap"

    Route.objects.filter(operation="report").update(primary_model=spare)

    assert route("report").model.model_id == "test/spare"


# Cooldowns.


@pytest.mark.django_db
def test_a_cooled_down_model_is_skipped_and_its_fallbacks_answer(cheap, spare, dear):
    factories.route("report", cheap, spare, dear)
    cool_down(route("report").model)

    decision = route("report")

    assert model_ids(decision) == ["test/spare", "test/dear"]
    assert decision.skipped == ["test/cheap: cooling down after a failure"]


@pytest.mark.django_db
def test_when_every_model_is_cooling_down_they_are_all_tried_anyway_in_order(cheap, spare):
    factories.route("report", cheap, spare)
    for choice in route("report").candidates:
        cool_down(choice)

    decision = route("report")

    assert model_ids(decision) == ["test/cheap", "test/spare"]


@pytest.mark.django_db
def test_a_cooldown_ends_when_its_time_is_up(cheap, spare):
    factories.route("report", cheap, spare)
    cool_down(route("report").model, seconds=30)
    assert cache.get(cooldown_key(cheap.pk)) is True

    cache.delete(cooldown_key(cheap.pk))  # what the cache does after 30 seconds

    assert route("report").model.model_id == "test/cheap"


# A/B splits.


@pytest.mark.django_db
def test_an_ab_split_of_100_percent_sends_every_call_to_the_second_model(cheap, spare, dear):
    factories.route("report", cheap, spare, ab_model=dear, ab_percent=100)

    decisions = [route("report") for _ in range(20)]

    assert all(d.ab_variant for d in decisions)
    assert {tuple(model_ids(d)) for d in decisions} == {("test/dear", "test/cheap", "test/spare")}


@pytest.mark.django_db
def test_an_ab_split_of_0_percent_sends_no_call_to_the_second_model(cheap, spare, dear):
    factories.route("report", cheap, spare, ab_model=dear, ab_percent=0)

    decisions = [route("report") for _ in range(50)]

    assert not any(d.ab_variant for d in decisions)
    assert {tuple(model_ids(d)) for d in decisions} == {("test/cheap", "test/spare")}


@pytest.mark.django_db
def test_an_ab_model_that_is_also_a_fallback_is_tried_once(cheap, spare):
    factories.route("report", cheap, spare, ab_model=spare, ab_percent=100)

    decision = route("report")

    assert decision.ab_variant
    assert model_ids(decision) == ["test/spare", "test/cheap"]


# Approval, as the decision reports it (the rules: test_approval_rules.py).


@pytest.mark.django_db
def test_the_decision_says_when_approval_is_needed_and_which_rule_says_so(cheap):
    factories.route("refund", cheap, spends_money=True)

    decision = route("refund")

    assert decision.needs_approval
    assert decision.approval is not None
    assert decision.approval.rule is Rule.SPENDS_MONEY
    assert decision.describe()["approval_rule"] == "spends_money"
