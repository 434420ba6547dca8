"""When a call needs a person's approval before it runs, and which rule says so.

The tree, in order: (1) the operation is marked as spending money or irreversible;
(2) the call's estimated cost is over the route's per-call threshold; (3) the call
would take a budget past 100%. The first rule that applies is the answer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from controlplane.money import usd
from routing.snapshots import RouteSnapshot


class Rule(enum.StrEnum):
    SPENDS_MONEY = "spends_money"
    IRREVERSIBLE = "irreversible"
    OVER_THRESHOLD = "over_threshold"
    OVER_BUDGET = "over_budget"


@dataclass(frozen=True)
class ApprovalNeed:
    rule: Rule
    reason: str

    @property
    def about_money(self) -> bool:
        return self.rule is not Rule.IRREVERSIBLE


def approval_needed(
    route: RouteSnapshot, estimated_cost: Decimal | None, budget_in_the_way: Any | None
) -> ApprovalNeed | None:
    if route.spends_money:
        return ApprovalNeed(
            Rule.SPENDS_MONEY, f"Operation '{route.operation}' is marked as spending money."
        )
    if route.irreversible:
        return ApprovalNeed(
            Rule.IRREVERSIBLE, f"Operation '{route.operation}' is marked as irreversible."
        )
    threshold = route.approval_threshold
    if threshold is not None and estimated_cost is not None and estimated_cost > threshold:
        return ApprovalNeed(
            Rule.OVER_THRESHOLD,
            f"Estimated cost {usd(estimated_cost)} is over the route's per-call threshold "
            f"of {usd(threshold)}.",
        )
    if budget_in_the_way is not None:
        return past_budget(budget_in_the_way)
    return None


def past_budget(budget_in_the_way: Any) -> ApprovalNeed:
    """Rule 3 on its own: asked of a call whose other rule was approved already (an
    approval answers its own rule only)."""
    return ApprovalNeed(
        Rule.OVER_BUDGET,
        f"The call would take the {budget_in_the_way} past 100% of its daily limit.",
    )
