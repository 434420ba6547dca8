"""`manage.py route OPERATION`: the routing decision, as a person or a script reads it."""

from __future__ import annotations

import json
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from routing.models import AIModel, Budget, Policy, Provider, Route, RouteFallback


def route_command(*args: str) -> str:
    out = StringIO()
    call_command("route", *args, stdout=out)
    return out.getvalue()


def lines_of(output: str) -> dict[str, str]:
    """Each line's label and the rest of it (the last line of a repeated label wins)."""
    return {line[:12].strip(): line[12:] for line in output.splitlines()}


@pytest.fixture
def chat_route(db: Any) -> Route:
    """chat on acme/large ($0.02 per 1k tokens), falling back to acme/medium ($0.0015)."""
    acme = Provider.objects.create(name="acme", kind=Provider.Kind.COMPATIBLE)
    large = AIModel.objects.create(
        provider=acme,
        model_id="acme/large",
        context_length=128000,
        price_prompt=Decimal("0.00001"),
        price_completion=Decimal("0.00003"),
    )
    medium = AIModel.objects.create(
        provider=acme,
        model_id="acme/medium",
        context_length=128000,
        price_prompt=Decimal("0.000001"),
        price_completion=Decimal("0.000002"),
    )
    route = Route.objects.get(operation="chat")
    route.primary_model = large
    route.policy = Policy.objects.get(mode="deep_research")
    route.save()
    RouteFallback.objects.create(route=route, model=medium, position=0)
    return route


TOKENS = ["--tokens", "1000", "--completion-tokens", "500"]  # $0.025 on acme/large


@pytest.mark.django_db
def test_it_prints_the_decision_for_an_operation(chat_route):
    output = route_command("chat", *TOKENS)
    assert output.splitlines()[:3] == [
        "operation   chat (mode deep_research)",
        "model       acme/large via acme",
        "fallbacks   acme/medium",
    ]
    shown = lines_of(output)
    assert shown["estimate"].startswith("$")
    assert Decimal(shown["estimate"][1:]) == Decimal("0.025")
    assert shown["approval"] == "not needed"
    assert shown["budgets"] == "none apply"
    assert "skipped" not in shown


@pytest.mark.django_db
def test_it_routes_the_seeded_chat_operation_offline_out_of_the_box(db):
    assert route_command("chat").splitlines() == [
        "operation   chat (mode normal)",
        "model       offline/echo via offline",
        "fallbacks   —",
        "estimate    $0.00",
        "approval    not needed",
        "budgets     none apply",
    ]


@pytest.mark.django_db
def test_it_lists_the_budgets_that_apply(chat_route, operator):
    Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal("10"))
    Budget.objects.create(scope=Budget.Scope.OPERATION, operation="chat", daily_limit=Decimal("5"))
    Budget.objects.create(
        scope=Budget.Scope.OPERATION, operation="summarize", daily_limit=Decimal("5")
    )
    Budget.objects.create(scope=Budget.Scope.USER, user=operator, daily_limit=Decimal("1"))
    Budget.objects.create(scope=Budget.Scope.SERVICE, service="billing", daily_limit=Decimal("2"))
    shown = lines_of(
        route_command("chat", *TOKENS, "--user", operator.username, "--service", "billing")
    )
    assert shown["budgets"] == (
        "global budget, operation chat budget, user oscar-operator budget, service billing budget"
    )
    assert lines_of(route_command("chat", *TOKENS))["budgets"] == (
        "global budget, operation chat budget"
    )


@pytest.mark.django_db
def test_a_mode_whose_policy_rules_out_the_primary_uses_the_fallback(chat_route):
    shown = lines_of(route_command("chat", *TOKENS, "--mode", "normal"))
    assert shown["operation"] == "chat (mode normal)"
    assert shown["model"] == "acme/medium via acme"
    assert shown["fallbacks"] == "—"
    # 1000 * $0.000001 + 500 * $0.000002
    assert Decimal(shown["estimate"][1:]) == Decimal("0.002")
    assert shown["skipped"].startswith("acme/large: over the policy's $0.01/1k tokens")


@pytest.mark.django_db
def test_it_prints_the_approval_rule_of_an_operation_that_spends_money(chat_route):
    chat_route.spends_money = True
    chat_route.save()
    shown = lines_of(route_command("chat", *TOKENS))
    assert shown["approval"] == (
        "needed (spends_money): Operation 'chat' is marked as spending money."
    )


@pytest.mark.django_db
def test_it_prints_the_approval_rule_of_a_call_over_the_routes_threshold(chat_route):
    chat_route.approval_threshold = Decimal("0.01")
    chat_route.save()
    shown = lines_of(route_command("chat", *TOKENS))
    assert shown["approval"] == (
        "needed (over_threshold): Estimated cost $0.025 is over the route's per-call "
        "threshold of $0.01."
    )
    assert lines_of(route_command("chat", "--tokens", "100", "--completion-tokens", "100"))[
        "approval"
    ] == ("not needed")


@pytest.mark.django_db
def test_it_prints_the_approval_rule_of_a_call_that_would_pass_a_budget(chat_route):
    Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal("0.02"))
    shown = lines_of(route_command("chat", *TOKENS))
    assert shown["approval"] == (
        "needed (over_budget): The call would take the global budget past 100% of its daily limit."
    )


@pytest.mark.django_db
def test_it_prints_the_decision_as_json(chat_route):
    chat_route.spends_money = True
    chat_route.save()
    Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal("10"))
    decision = json.loads(route_command("chat", *TOKENS, "--json"))
    assert Decimal(decision.pop("estimated_cost")) == Decimal("0.025")
    assert decision == {
        "operation": "chat",
        "mode": "deep_research",
        "model": "acme/large",
        "provider": "acme",
        "fallbacks": ["acme/medium"],
        "needs_approval": True,
        "approval_rule": "spends_money",
        "approval_reason": "Operation 'chat' is marked as spending money.",
        "budgets": ["global budget"],
        "ab_variant": False,
        "skipped": [],
    }


@pytest.mark.django_db
def test_the_json_estimate_is_an_exact_string(chat_route):
    decision = json.loads(
        route_command("chat", "--tokens", "3", "--completion-tokens", "7", "--json")
    )
    assert isinstance(decision["estimated_cost"], str)
    # 3 * $0.00001 + 7 * $0.00003, to the last digit
    assert Decimal(decision["estimated_cost"]) == Decimal("0.00024")


@pytest.mark.django_db
def test_an_unknown_operation_is_a_command_error(db):
    with pytest.raises(CommandError, match="No route for operation 'translate'"):
        route_command("translate")


@pytest.mark.django_db
def test_an_unknown_mode_is_a_command_error(db):
    with pytest.raises(CommandError, match="Unknown mode 'turbo'"):
        route_command("chat", "--mode", "turbo")


@pytest.mark.django_db
def test_an_unknown_user_is_a_command_error(db):
    with pytest.raises(CommandError, match="No user 'nobody'"):
        route_command("chat", "--user", "nobody")


@pytest.mark.django_db
def test_negative_tokens_are_a_command_error(db):
    with pytest.raises(CommandError, match="cannot be negative"):
        route_command("chat", "--tokens", "-5")
