"""`route()`: which model answers an operation, at what estimated cost, under which
budgets, and whether a person must approve first."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.cache import cache

from controlplane.money import dollars
from controlplane.tiers import StaffUser
from routing import budgets, pricing
from routing.approval_rules import ApprovalNeed, approval_needed
from routing.call_units import NO_UNITS, CallUnits
from routing.models import Budget, Provider
from routing.models.catalog import CallKind
from routing.snapshots import (
    ModelChoice,
    PolicySnapshot,
    Reading,
    RouteSnapshot,
    RoutingTable,
    routing_table,
)


class RoutingError(Exception):
    code = "routing_error"


class UnknownOperation(RoutingError):
    code = "unknown_operation"

    def __init__(self, operation: str) -> None:
        super().__init__(
            f"No route for operation '{operation}'. An Owner adds one in the admin "
            "(Control > Routes)."
        )
        self.operation = operation


class UnknownMode(RoutingError):
    code = "unknown_mode"


class NoModelAvailable(RoutingError):
    code = "no_model_available"


class UnpricedUnit(RoutingError):
    """The request carries a unit (an image, audio or video part) that no model of the
    route has a price for; `param` names the request's field carrying it."""

    code = "unit_price_missing"

    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.param = param


class TooManyTokens(RoutingError):
    """The caller asks for a longer answer than any model of the route can give."""

    code = "context_length_exceeded"

    def __init__(self, asked: int, most: int) -> None:
        super().__init__(
            f"{asked:,} completion tokens were asked for; the models of this route give "
            f"at most {most:,} (their context in the catalog, else GATEWAY_MAX_TOKENS_CAP)."
        )
        self.asked = asked
        self.most = most


def token_cap(model: ModelChoice) -> int:
    """The longest answer a model may be asked for: its context in the catalog, else
    the setting. It bounds every estimate and reservation, whatever a caller sends."""
    return model.context_length or settings.GATEWAY_MAX_TOKENS_CAP


@dataclass
class RouteDecision:
    operation: str
    mode: str | None
    model: ModelChoice
    fallbacks: list[ModelChoice]
    estimated_cost: Decimal
    prompt_tokens: int
    completion_tokens: int
    approval: ApprovalNeed | None
    budgets: list[Budget]
    policy: PolicySnapshot | None
    route: RouteSnapshot
    ab_variant: bool = False
    skipped: list[str] = field(default_factory=list)  # candidates left out, and why
    # The catalog's providers as the routing table had them: each candidate's client
    # is built from these, with no second read of the table.
    providers: Mapping[int, Provider] = field(default_factory=dict)

    @property
    def needs_approval(self) -> bool:
        return self.approval is not None

    @property
    def candidates(self) -> list[ModelChoice]:
        return [self.model, *self.fallbacks]

    def describe(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "mode": self.mode,
            "model": self.model.model_id,
            "provider": self.model.provider_name,
            "fallbacks": [m.model_id for m in self.fallbacks],
            "estimated_cost": str(self.estimated_cost),
            "needs_approval": self.needs_approval,
            "approval_rule": self.approval.rule.value if self.approval else None,
            "approval_reason": self.approval.reason if self.approval else None,
            "budgets": [str(b) for b in self.budgets],
            "ab_variant": self.ab_variant,
            "skipped": self.skipped,
        }


def cooldown_key(model_pk: int) -> str:
    return f"routing:cooldown:{model_pk}"


def cooldown_keys(table: RoutingTable, operation: str) -> list[str]:
    """The cooldown keys of every model that may answer `operation`, for a caller
    reading them with the routing table (`snapshots.read`)."""
    snapshot = table.routes.get(operation)
    if snapshot is None:
        return []
    models = [snapshot.primary, *snapshot.fallbacks]
    if snapshot.ab_model is not None:
        models.append(snapshot.ab_model)
    return [cooldown_key(model.pk) for model in models]


def cool_down(model: ModelChoice, seconds: float | None = None) -> None:
    """Skip a failing model for a while; its fallbacks answer meanwhile."""
    cache.set(cooldown_key(model.pk), True, seconds or settings.MODEL_COOLDOWN_SECONDS)


def _eligible(
    model: ModelChoice,
    policy: PolicySnapshot | None,
    prompt_tokens: int,
    units: CallUnits = NO_UNITS,
) -> str | None:
    """Why `model` cannot serve this call, or None when it can."""
    if not model.active:
        return "inactive"
    if model.kind != units.kind and not model.is_offline:
        return f"a {model.kind} model, not for {units.kind} calls"
    missing = pricing.missing_prices(model, units.kind, units)
    if missing:
        names = " and ".join(name.removeprefix("price_").replace("_", " ") for name in missing)
        return f"price missing: no {names} price (flagged in the catalog)"
    # An embeddings request's tokens are spread over its inputs, each embedded on its
    # own: the context bounds each input (the provider refuses one too long), not
    # their sum.
    too_long = model.context_length is not None and prompt_tokens > model.context_length
    if too_long and units.kind != CallKind.EMBEDDING:
        return f"context {model.context_length} < {prompt_tokens} tokens"
    if policy is None:
        return None
    if policy.max_context is not None and prompt_tokens > policy.max_context:
        return f"policy max context {policy.max_context}"
    if (
        policy.max_price_per_1k is not None
        and model.price_per_1k is not None
        and model.price_per_1k > policy.max_price_per_1k
    ):
        return f"over the policy's {dollars(policy.max_price_per_1k)}/1k tokens"
    return None


def _refuse_unpriced_units(
    ordered: list[ModelChoice],
    policy: PolicySnapshot | None,
    prompt_tokens: int,
    units: CallUnits,
    skipped: list[str],
) -> None:
    """When the route's models would serve the call but for the price of a unit its
    request carries (a video part, say), the request is at fault: say which part."""
    if units is NO_UNITS or not units.fields:
        return
    plain = CallUnits(units.kind)
    if not any(_eligible(m, policy, prompt_tokens, plain) is None for m in ordered):
        return
    for model in ordered:
        for price in pricing.missing_prices(model, units.kind, units):
            param = units.field_of(price)
            if param is not None:
                unit = price.removeprefix("price_").replace("_", " ")
                raise UnpricedUnit(
                    f"'{param}' needs a {unit} price, and no model of this route has one "
                    "in the catalog: " + "; ".join(skipped),
                    param,
                )


def route(
    operation: str,
    mode: str | None = None,
    user: StaffUser | None = None,
    estimated_tokens: int | None = None,
    *,
    service: str = "",
    completion_tokens: int | None = None,
    budgets_enforced: bool | None = None,
    reading: Reading | None = None,
    check_budgets: bool = True,
    units: CallUnits = NO_UNITS,
) -> RouteDecision:
    """`budgets_enforced`: the state of the toggle when the caller has read it.
    `reading`: the routing table and the models' cooldowns when the caller has read
    them (`snapshots.read` with `cooldown_keys`). `check_budgets=False`: approval
    rule 3 (a budget past 100%) is not looked into here, since the caller finds it
    out from its reservation; no ledger is read. `units`: the call's kind and what it
    is measured in besides tokens (`call_units`): only models of its kind with a
    price for each unit serve it."""
    table = reading.table if reading is not None else routing_table()
    snapshot = table.routes.get(operation)
    if snapshot is None:
        raise UnknownOperation(operation)
    if mode is not None and mode not in table.policies:
        raise UnknownMode(f"Unknown mode '{mode}'. Modes: {', '.join(sorted(table.policies))}.")
    policy = table.policies.get(mode or snapshot.policy_mode or "")
    prompt_tokens = estimated_tokens or 0
    completion = completion_tokens or settings.DEFAULT_COMPLETION_TOKENS

    ordered = [snapshot.primary, *snapshot.fallbacks]
    ab_variant = False
    if snapshot.ab_model is not None and random.uniform(0, 100) < snapshot.ab_percent:
        ordered = [snapshot.ab_model, *[m for m in ordered if m.pk != snapshot.ab_model.pk]]
        ab_variant = True
    if policy is not None and not ab_variant:
        preferred = [
            m
            for m in ordered
            if m.pk == policy.preferred_model_id or m.provider_id == policy.preferred_provider_id
        ]
        ordered = preferred + [m for m in ordered if m not in preferred]

    skipped: list[str] = []
    usable = []
    for model in ordered:
        reason = _eligible(model, policy, prompt_tokens, units)
        if not reason and completion_tokens is not None and completion > token_cap(model):
            reason = f"answers of at most {token_cap(model):,} tokens"
        if reason:
            skipped.append(f"{model.model_id}: {reason}")
        else:
            usable.append(model)
    keys = [cooldown_key(m.pk) for m in usable]
    cooling = reading.values if reading is not None and reading.has(keys) else cache.get_many(keys)
    warm = [m for m in usable if cooldown_key(m.pk) not in cooling]
    skipped += [f"{m.model_id}: cooling down after a failure" for m in usable if m not in warm]
    # When every usable model is cooling down, try them anyway rather than fail.
    candidates = warm or usable
    if not candidates and completion_tokens is not None:
        caps = [token_cap(m) for m in ordered if _eligible(m, policy, prompt_tokens, units) is None]
        if caps and completion > max(caps):
            raise TooManyTokens(completion, max(caps))
    if not candidates:
        _refuse_unpriced_units(ordered, policy, prompt_tokens, units, skipped)
        raise NoModelAvailable(
            f"No model can serve '{operation}': " + "; ".join(skipped or ["no models"])
        )

    chosen = candidates[0]
    estimated = pricing.estimate_cost(
        chosen, prompt_tokens, completion, kind=units.kind, units=units
    )
    applicable = budgets.applicable_budgets(user, operation, service, among=table.budgets)
    in_the_way = (
        budgets.would_exceed(applicable, estimated, enforced=budgets_enforced)
        if check_budgets
        else None
    )
    return RouteDecision(
        operation=operation,
        mode=mode or (policy.mode if policy else None),
        model=chosen,
        fallbacks=candidates[1:],
        estimated_cost=estimated,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion,
        approval=approval_needed(snapshot, estimated, in_the_way),
        budgets=applicable,
        policy=policy,
        route=snapshot,
        ab_variant=ab_variant,
        skipped=skipped,
        providers=table.providers,
    )
