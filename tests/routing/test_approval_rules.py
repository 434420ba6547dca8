"""The approval tree (spends money or irreversible; over the per-call threshold; past a
budget) as `route()` reports it, and the approval a refused call waits on: asked
once, decided by the right tier, used exactly once."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from controlplane.approvals import ApprovalError, decide_approval
from controlplane.models import Approval, FeatureToggle
from controlplane.tiers import Tier
from routing import budgets, calls, pricing, reservations
from routing.approval_rules import Rule
from routing.budgets import budget_day
from routing.call_refusals import ApprovalRequired, OverBudget
from routing.calls import CallContext
from routing.models import AIModel, Budget, BudgetDay, OperationLog, Provider, Reservation
from routing.router import route
from tests.routing import factories
from tests.scripted_providers import Reply, ScriptedProvider, use_scripted

MESSAGES = [{"role": "user", "content": "Refund order 42"}]
MAX_TOKENS = 500


@pytest.fixture
def local(db: Any) -> Provider:
    return factories.provider(name="local")


@pytest.fixture
def cheap(local: Provider) -> AIModel:
    return factories.model(local, "test/cheap", prompt="0.000001", completion="0.000002")


@pytest.fixture
def dear(local: Provider) -> AIModel:
    return factories.model(local, "test/dear", prompt="0.0000025", completion="0.00001")


@pytest.fixture
def model_answers() -> Any:
    """The local provider's model, scripted: each call that reaches it takes a turn."""
    scripted = ScriptedProvider([Reply("Refunded.", cost="0.0004")] * 5, label="local")
    with use_scripted("local", scripted):
        yield scripted


def estimate_of(operation: str) -> Decimal:
    return route(
        operation,
        estimated_tokens=pricing.estimate_prompt_tokens(MESSAGES),
        completion_tokens=MAX_TOKENS,
    ).estimated_cost


def call(operation: str, **context: Any) -> calls.CallResult:
    return calls.complete(CallContext(operation, **context), MESSAGES, max_tokens=MAX_TOKENS)


def refusal(operation: str, **context: Any) -> ApprovalRequired:
    with pytest.raises(ApprovalRequired) as refused:
        call(operation, **context)
    return refused.value


def approve(approval_id: int, by: Any, capture: Any) -> Approval:
    with capture(execute=True):
        return decide_approval(Approval.objects.get(pk=approval_id), user=by, approve=True)


# The three rules, in order.


@pytest.mark.django_db
def test_rule_1_an_operation_marked_as_spending_money_always_needs_approval(cheap):
    factories.route("refund", cheap, spends_money=True)

    need = route("refund", estimated_tokens=1).approval

    assert need is not None
    assert need.rule is Rule.SPENDS_MONEY
    assert need.reason == "Operation 'refund' is marked as spending money."
    assert need.about_money


@pytest.mark.django_db
def test_rule_1_an_irreversible_operation_always_needs_approval_not_about_money(cheap):
    factories.route("deploy", cheap, irreversible=True)

    need = route("deploy", estimated_tokens=1).approval

    assert need is not None
    assert need.rule is Rule.IRREVERSIBLE
    assert need.reason == "Operation 'deploy' is marked as irreversible."
    assert not need.about_money


@pytest.mark.django_db
def test_rule_2_a_call_estimated_over_the_routes_threshold_needs_approval(dear):
    factories.route("report", dear, approval_threshold="0.005")

    need = route("report", estimated_tokens=1000, completion_tokens=500).approval  # $0.0075

    assert need is not None
    assert need.rule is Rule.OVER_THRESHOLD
    assert need.reason == (
        "Estimated cost $0.0075 is over the route's per-call threshold of $0.005."
    )
    assert need.about_money


@pytest.mark.django_db
def test_rule_2_a_call_estimated_at_the_threshold_exactly_needs_none(dear):
    factories.route("report", dear, approval_threshold="0.0075")

    assert route("report", estimated_tokens=1000, completion_tokens=500).approval is None
    assert route("report", estimated_tokens=1001, completion_tokens=500).approval is not None


@pytest.mark.django_db
def test_rule_3_a_call_that_would_take_a_budget_past_100_percent_needs_approval(dear, operator):
    factories.route("report", dear)
    factories.budget("100")
    mine = factories.budget("1", Budget.Scope.USER, user=operator)
    BudgetDay.objects.create(budget=mine, day=budget_day(), limit=1, spent=Decimal("0.9925"))

    fits = route("report", user=operator, estimated_tokens=1000, completion_tokens=500)
    # $0.9925 spent + $0.0075 = the limit exactly: still within it.
    assert fits.approval is None

    need = route("report", user=operator, estimated_tokens=1001, completion_tokens=500).approval
    assert need is not None
    assert need.rule is Rule.OVER_BUDGET
    assert need.reason == (
        "The call would take the user oscar-operator budget past 100% of its daily limit."
    )
    assert need.about_money


@pytest.mark.django_db
def test_rule_3_counts_what_calls_in_flight_have_reserved(dear):
    factories.route("report", dear)
    everything = factories.budget("0.01")
    reservations.reserve("in-flight", Decimal("0.005"), [everything])

    need = route("report", estimated_tokens=1000, completion_tokens=500).approval

    assert need is not None
    assert need.rule is Rule.OVER_BUDGET


@pytest.mark.django_db
def test_rule_3_does_not_apply_while_budgets_are_not_enforced(
    dear, django_capture_on_commit_callbacks
):
    factories.route("report", dear)
    factories.budget("0.001")
    with django_capture_on_commit_callbacks(execute=True):
        toggle = FeatureToggle.objects.get(key=budgets.ENFORCED_TOGGLE)
        toggle.enabled = False
        toggle.save()

    assert route("report", estimated_tokens=1000, completion_tokens=500).approval is None


@pytest.mark.django_db
def test_the_first_rule_that_applies_is_the_one_reported(dear):
    factories.budget("0.001")
    factories.route(
        "everything", dear, spends_money=True, irreversible=True, approval_threshold="0"
    )
    factories.route("irreversible", dear, irreversible=True, approval_threshold="0")
    factories.route("threshold", dear, approval_threshold="0")
    factories.route("budget", dear)

    rules = {
        operation: route(operation, estimated_tokens=1000).approval.rule  # type: ignore[union-attr]
        for operation in ("everything", "irreversible", "threshold", "budget")
    }

    assert rules == {
        "everything": Rule.SPENDS_MONEY,
        "irreversible": Rule.IRREVERSIBLE,
        "threshold": Rule.OVER_THRESHOLD,
        "budget": Rule.OVER_BUDGET,
    }


@pytest.mark.django_db
def test_a_free_offline_call_under_a_zero_budget_needs_no_approval():
    factories.budget("0")

    assert route("chat", estimated_tokens=100).approval is None


# The approval a refused call waits on.


@pytest.mark.django_db
def test_a_call_that_needs_approval_is_refused_with_the_id_of_an_approval_to_wait_on(
    cheap, operator, model_answers
):
    factories.route("refund", cheap, spends_money=True)
    everything = factories.budget("10")

    refused = refusal("refund", user=operator)

    approval = Approval.objects.get()
    assert refused.details == {"approval_id": approval.pk, "rule": "spends_money"}
    assert str(refused) == (
        f"Approval #{approval.pk} is needed: Operation 'refund' is marked as spending money."
    )
    assert approval.action == "routing.call"
    assert approval.status == Approval.Status.PENDING
    assert approval.requested_by == operator
    assert approval.amount == estimate_of("refund")
    assert approval.required_tier == Tier.OWNER
    assert approval.proposal == {
        "operation": "refund",
        "mode": None,
        "model": "test/cheap",
        "estimated_cost": str(estimate_of("refund")),
        "rule": "spends_money",
        "service": "",
    }
    # Nothing was spent or set aside, and the refusal is in the log.
    assert model_answers.requests == []
    assert not Reservation.objects.exists()
    assert not BudgetDay.objects.filter(budget=everything, reserved__gt=0).exists()
    row = OperationLog.objects.get()
    assert row.status == OperationLog.Status.REFUSED
    assert row.cost == 0
    assert row.error.startswith(f"approval_required: Approval #{approval.pk} is needed")


@pytest.mark.django_db
def test_asking_again_reuses_the_same_pending_approval(cheap, operator, model_answers):
    factories.route("refund", cheap, spends_money=True)

    first = refusal("refund", user=operator)
    again = refusal("refund", user=operator)

    assert again.details["approval_id"] == first.details["approval_id"]
    assert Approval.objects.count() == 1
    assert OperationLog.objects.filter(status=OperationLog.Status.REFUSED).count() == 2


@pytest.mark.django_db
def test_a_call_about_money_cannot_be_approved_by_an_operator(cheap, operator, operator2):
    factories.route("refund", cheap, spends_money=True)
    approval_id = refusal("refund", user=operator).details["approval_id"]

    with pytest.raises(ApprovalError, match="needs the Owner tier"):
        decide_approval(Approval.objects.get(pk=approval_id), user=operator2, approve=True)


@pytest.mark.django_db
def test_once_an_owner_approves_the_call_goes_through_exactly_once(
    cheap, operator, owner, model_answers, django_capture_on_commit_callbacks
):
    factories.route("refund", cheap, spends_money=True)
    approval_id = refusal("refund", user=operator).details["approval_id"]
    approve(approval_id, owner, django_capture_on_commit_callbacks)

    result = call("refund", user=operator, approval_id=approval_id)

    assert result.completion.content == "Refunded."
    assert result.cost == Decimal("0.0004")
    assert len(model_answers.requests) == 1
    assert result.log.status == OperationLog.Status.OK
    used = Approval.objects.get(pk=approval_id)
    assert used.outcome.startswith(f"Used by call {result.log.request_id} at ")

    # The same approval a second time: refused, with a new approval to wait on.
    again = refusal("refund", user=operator, approval_id=approval_id)
    assert again.details["approval_id"] != approval_id
    assert len(model_answers.requests) == 1
    assert Approval.objects.get(pk=approval_id).outcome == used.outcome


@pytest.mark.django_db
def test_a_rejected_approval_does_not_let_the_call_through(
    cheap, operator, owner, model_answers, django_capture_on_commit_callbacks
):
    factories.route("refund", cheap, spends_money=True)
    approval_id = refusal("refund", user=operator).details["approval_id"]
    with django_capture_on_commit_callbacks(execute=True):
        decide_approval(Approval.objects.get(pk=approval_id), user=owner, approve=False)

    again = refusal("refund", user=operator, approval_id=approval_id)

    assert again.details["approval_id"] != approval_id
    assert model_answers.requests == []


@pytest.mark.django_db
def test_an_irreversible_call_is_approved_by_an_operator_and_carries_no_amount(
    cheap, operator, operator2, model_answers, django_capture_on_commit_callbacks
):
    factories.route("deploy", cheap, irreversible=True)

    refused = refusal("deploy", user=operator)

    approval = Approval.objects.get(pk=refused.details["approval_id"])
    assert refused.details["rule"] == "irreversible"
    assert approval.amount is None
    assert approval.required_tier == Tier.OPERATOR
    approve(approval.pk, operator2, django_capture_on_commit_callbacks)
    assert call("deploy", user=operator, approval_id=approval.pk).log.status == "ok"


@pytest.mark.django_db
def test_an_over_threshold_call_needs_an_owner_for_its_estimated_amount(
    dear, operator, owner, model_answers, django_capture_on_commit_callbacks
):
    factories.route("report", dear, approval_threshold="0.001")

    refused = refusal("report", user=operator)

    approval = Approval.objects.get(pk=refused.details["approval_id"])
    assert refused.details["rule"] == "over_threshold"
    assert approval.amount == estimate_of("report")
    assert approval.required_tier == Tier.OWNER
    approve(approval.pk, owner, django_capture_on_commit_callbacks)
    assert call("report", user=operator, approval_id=approval.pk).cost == Decimal("0.0004")


@pytest.mark.django_db
def test_an_approved_over_budget_call_may_take_the_budget_past_its_limit(
    cheap, operator, owner, model_answers, django_capture_on_commit_callbacks
):
    factories.route("refund", cheap)
    everything = factories.budget("0.0002")  # the call is estimated at $0.001012
    refused = refusal("refund", user=operator)
    assert refused.details["rule"] == "over_budget"
    assert "global budget" in str(refused)
    approve(refused.details["approval_id"], owner, django_capture_on_commit_callbacks)

    result = call("refund", user=operator, approval_id=refused.details["approval_id"])

    reservation = Reservation.objects.get(request_id=result.log.request_id)
    assert reservation.approved
    assert reservation.status == Reservation.Status.SETTLED
    assert reservation.actual == Decimal("0.0004")
    ledger = BudgetDay.objects.get(budget=everything)
    assert (ledger.spent, ledger.reserved) == (Decimal("0.0004"), 0)
    assert ledger.spent > ledger.limit


@pytest.mark.django_db(transaction=True)
def test_a_call_within_its_budgets_reads_no_ledger_before_it_reserves(
    cheap, model_answers, monkeypatch
):
    monkeypatch.setattr(reservations, "_known_ledgers", {})  # none from another test
    factories.route("refund", cheap)
    everything = factories.budget("10")
    call("refund")  # the day's ledger exists (and is known) from here on

    with CaptureQueriesContext(connection) as queries:
        call("refund")

    ledger_table = BudgetDay._meta.db_table
    reads = [
        q["sql"]
        for q in queries.captured_queries
        if ledger_table in q["sql"] and q["sql"].lstrip().upper().startswith("SELECT")
    ]
    assert reads == []  # rule 3 is found out from the reservation, not from a read
    assert BudgetDay.objects.get(budget=everything).spent == Decimal("0.0008")


@pytest.mark.django_db
def test_a_used_up_budget_refuses_the_call_instead_of_asking_for_approval(cheap, model_answers):
    factories.route("refund", cheap)
    everything = factories.budget("0.01")
    # Another call spent it all today.
    reservations.settle(reservations.reserve("earlier", Decimal(0), [everything]), Decimal("0.01"))

    with pytest.raises(OverBudget, match="global budget"):
        call("refund")

    assert not Approval.objects.exists()
    assert BudgetDay.objects.get(budget=everything).reserved == 0


@pytest.mark.django_db
def test_an_approval_for_one_operation_cannot_be_used_for_another(
    cheap, operator, owner, model_answers, django_capture_on_commit_callbacks
):
    factories.route("refund", cheap, spends_money=True)
    factories.route("payout", cheap, spends_money=True)
    approval_id = refusal("refund", user=operator).details["approval_id"]
    approve(approval_id, owner, django_capture_on_commit_callbacks)

    refusal("payout", user=operator, approval_id=approval_id)

    assert Approval.objects.get(pk=approval_id).outcome == ""
    assert call("refund", user=operator, approval_id=approval_id).log.status == "ok"


@pytest.mark.django_db
def test_an_approval_granted_to_one_person_cannot_be_used_by_another(
    cheap, operator, operator2, owner, model_answers, django_capture_on_commit_callbacks
):
    factories.route("refund", cheap, spends_money=True)
    approval_id = refusal("refund", user=operator).details["approval_id"]
    approve(approval_id, owner, django_capture_on_commit_callbacks)

    refusal("refund", user=operator2, approval_id=approval_id)
    refusal("refund", service="billing", approval_id=approval_id)

    assert model_answers.requests == []
    assert Approval.objects.get(pk=approval_id).outcome == ""
    assert call("refund", user=operator, approval_id=approval_id).log.status == "ok"


@pytest.mark.django_db
def test_a_calling_service_asks_for_approval_as_its_own_inactive_account(
    cheap, owner, model_answers, django_capture_on_commit_callbacks
):
    factories.route("refund", cheap, spends_money=True)

    refused = refusal("refund", service="billing")

    approval = Approval.objects.get(pk=refused.details["approval_id"])
    assert approval.requested_by.username == "service-billing"
    assert not approval.requested_by.is_active
    assert not approval.requested_by.has_usable_password()
    assert approval.proposal["service"] == "billing"
    approve(approval.pk, owner, django_capture_on_commit_callbacks)
    result = call("refund", service="billing", approval_id=approval.pk)
    assert (result.log.service, result.log.status) == ("billing", "ok")


@pytest.mark.django_db
def test_an_approval_for_less_than_the_calls_new_estimate_does_not_cover_it(
    cheap, operator, owner, model_answers, django_capture_on_commit_callbacks
):
    factories.route("refund", cheap, spends_money=True)
    approval_id = refusal("refund", user=operator).details["approval_id"]
    approve(approval_id, owner, django_capture_on_commit_callbacks)

    with pytest.raises(ApprovalRequired):
        calls.complete(
            CallContext("refund", user=operator, approval_id=approval_id),
            MESSAGES,
            max_tokens=MAX_TOKENS * 2,
        )

    assert model_answers.requests == []
    assert Approval.objects.get(pk=approval_id).outcome == ""


@pytest.mark.django_db
def test_an_estimate_finer_than_the_approvals_amount_column_is_still_covered_once_approved(
    local, operator, owner, model_answers, django_capture_on_commit_callbacks
):
    # Approval.amount keeps 10 decimal places; this estimate has 18. An amount rounded
    # down would never cover the call, and it would ask for approval forever.
    fine = factories.model(local, "test/fine", prompt="0.000000100000000001", completion="0.000001")
    factories.route("refund", fine, spends_money=True)
    assert estimate_of("refund") == Decimal("0.000501200000000012")
    approval_id = refusal("refund", user=operator).details["approval_id"]
    assert Approval.objects.get(pk=approval_id).amount >= estimate_of("refund")
    approve(approval_id, owner, django_capture_on_commit_callbacks)

    assert call("refund", user=operator, approval_id=approval_id).log.status == "ok"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_one_approval_used_by_many_calls_at_once_lets_exactly_one_through(
    cheap, operator, owner, model_answers, django_capture_on_commit_callbacks
):
    factories.route("refund", cheap, spends_money=True)
    approval_id = refusal("refund", user=operator).details["approval_id"]
    approve(approval_id, owner, django_capture_on_commit_callbacks)
    outcomes: list[str] = []
    start = threading.Barrier(5)

    def use_it() -> None:
        try:
            start.wait()
            call("refund", user=operator, approval_id=approval_id)
            outcomes.append("through")
        except ApprovalRequired:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=use_it) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["refused"] * 4 + ["through"]
    assert len(model_answers.requests) == 1
