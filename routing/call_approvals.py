"""The approvals a call may need (`routing.approval_rules` says when): asking an
Owner or Operator for one, and using one granted, once, by a call that was made.

A call is approved for its requester: the user who makes it, else the inactive
account that stands for the calling service (`service_account`).
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal
from typing import TYPE_CHECKING, Any

from django.db import models
from django.utils import timezone

from controlplane.approvals import request_approval
from controlplane.models import Approval
from controlplane.money import usd
from controlplane.service_accounts import service_account
from controlplane.tiers import Tier
from routing.approval_rules import Rule

if TYPE_CHECKING:
    from routing.calls import CallContext
    from routing.router import RouteDecision

APPROVAL_ACTION = "routing.call"


def requester(context: CallContext) -> Any:
    """Who asks for (and may then use) an approval: the user, else the service's account."""
    if getattr(context.user, "pk", None):
        return context.user
    return service_account(context.service or "unknown")


def approval_amount(estimate: Decimal) -> Decimal:
    """The estimate rounded up to the places `Approval.amount` keeps, so the stored
    amount still covers the call it approves (rounded down, it never would)."""
    column = Approval._meta.get_field("amount")
    assert isinstance(column, models.DecimalField)
    return estimate.quantize(Decimal(1).scaleb(-column.decimal_places), rounding=ROUND_CEILING)


def usable_approval(
    context: CallContext, decision: RouteDecision, *, rule: Rule | None = None
) -> Approval | None:
    """An approved approval this requester got for this operation (for `rule`, when
    given), not used by a call yet, claimed for this call: no other call can use it
    meanwhile. The claim becomes its use once a provider answered (`mark_used`) and
    is given back if none did (`give_back`), so a failed call does not make the
    caller ask again."""
    if context.approval_id is None:
        return None
    approvals = Approval.objects.filter(
        pk=context.approval_id,
        action=APPROVAL_ACTION,
        status=Approval.Status.APPROVED,
        requested_by=requester(context),
        proposal__operation=context.operation,
    )
    if rule is not None:
        approvals = approvals.filter(proposal__rule=rule.value)
    approval = approvals.first()
    if approval is None:
        return None
    if approval.amount is not None and approval.amount < decision.estimated_cost:
        return None
    claimed = Approval.objects.filter(pk=approval.pk, outcome="").update(outcome=_claim(context))
    return approval if claimed else None


def approves_past_budget(approval: Approval | None) -> bool:
    """Whether an approval lets its call go past a budget's limit: only one granted for
    that (approval rule 3). Any other answers its own rule; the budgets still hold."""
    proposal = approval.proposal if approval is not None else None
    return isinstance(proposal, dict) and proposal.get("rule") == Rule.OVER_BUDGET.value


def _claim(context: CallContext) -> str:
    return f"In use by call {context.request_id}."


def mark_used(approval: Approval, context: CallContext) -> None:
    """The call the approval was claimed for was made: the approval is used up."""
    Approval.objects.filter(pk=approval.pk, outcome=_claim(context)).update(
        outcome=f"Used by call {context.request_id} at {timezone.now():%Y-%m-%d %H:%M:%S %Z}."
    )


def give_back(approval: Approval, context: CallContext) -> None:
    """No provider answered the call (or it was refused): the approval is usable again."""
    Approval.objects.filter(pk=approval.pk, outcome=_claim(context)).update(outcome="")


def ask_for_approval(context: CallContext, decision: RouteDecision) -> Approval:
    need = decision.approval
    assert need is not None
    asker = requester(context)
    pending = Approval.objects.filter(
        action=APPROVAL_ACTION,
        status=Approval.Status.PENDING,
        requested_by=asker,
        proposal__operation=context.operation,
        proposal__rule=need.rule.value,
        expires_at__gt=timezone.now(),
    ).first()
    if pending is not None:
        return pending  # the same call asked again: one approval to wait on
    return request_approval(
        action=APPROVAL_ACTION,
        requested_by=asker,
        reason=f"{need.reason} Model {decision.model.label}, estimated "
        f"{usd(decision.estimated_cost)}.",
        amount=approval_amount(decision.estimated_cost) if need.about_money else None,
        required_tier=Tier.OWNER if need.about_money else Tier.OPERATOR,
        proposal={
            "operation": context.operation,
            "mode": decision.mode,
            "model": decision.model.model_id,
            "estimated_cost": str(decision.estimated_cost),
            "rule": need.rule.value,
            "service": context.service,
        },
    )
