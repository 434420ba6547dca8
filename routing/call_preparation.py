"""A call made ready before any provider is asked: its switches read, its route
decided, an approval claimed or asked for, its estimate reserved on its budgets
(`prepare`, and `prepare_chat` for a chat's messages). A call that may not be made
raises a `CallRefused` here, logged, before anything is spent. `routing.calls`
then asks the providers and records the call.
"""

from __future__ import annotations

import functools
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from controlplane.models import Approval, toggle_cache_keys, toggles_enabled
from controlplane.tiers import StaffUser
from routing import budgets, call_records, pricing, reservations
from routing.approval_rules import Rule, past_budget
from routing.call_approvals import (
    approves_past_budget,
    ask_for_approval,
    give_back,
    usable_approval,
)
from routing.call_refusals import (
    ApprovalRequired,
    CallRefused,
    FeatureOff,
    NotRoutable,
    OverBudget,
    TooLong,
    UnpricedPart,
)
from routing.call_units import CallUnits, UnmeasurableRequest, chat_units
from routing.models import Reservation
from routing.providers.base import ChatRequest
from routing.router import (
    RouteDecision,
    RoutingError,
    TooManyTokens,
    UnpricedUnit,
    cooldown_keys,
    route,
)
from routing.snapshots import Reading, RoutingTable, read


@dataclass
class CallContext:
    """Who calls, for what. `approval_id` names an approval granted for this call."""

    operation: str
    mode: str | None = None
    user: StaffUser | None = None
    service: str = ""
    approval_id: int | None = None
    via_gateway: bool = False
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # The routing state as the caller read it already (`state_keys`), if it did.
    reading: Reading | None = None
    started: float = field(default_factory=time.perf_counter)  # for the added latency


@dataclass
class Prepared:
    """A call reserved and about to be made: what `call_records` records it from."""

    context: CallContext
    decision: RouteDecision
    reservation: Reservation
    request: ChatRequest | None  # a chat's; other kinds ask their providers themselves
    started: float
    # Claimed for this call; used up once a provider answered, else given back.
    approval: Approval | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    streaming: bool = False
    ended_because: str = ""  # why a stream was closed early, when not its client
    units: CallUnits = field(default_factory=CallUnits)  # the call's kind and units


def _operation_toggle(operation: str) -> str:
    return f"operation.{operation}.enabled"


def _switches(operation: str, via_gateway: bool) -> dict[str, bool]:
    """Every switch a call depends on, with its default."""
    wanted = {_operation_toggle(operation): True, budgets.ENFORCED_TOGGLE: True}
    if via_gateway:
        wanted["gateway.enabled"] = True
    return wanted


def state_keys(table: RoutingTable, operation: str, *, via_gateway: bool) -> list[str]:
    """The cache keys a call for `operation` reads with the routing table's version, in
    one round trip (`snapshots.read`): its switches and its models' cooldowns."""
    return [
        *toggle_cache_keys(_switches(operation, via_gateway)),
        *cooldown_keys(table, operation),
    ]


def _approved(
    context: CallContext, decision: RouteDecision, *, rule: Rule | None = None
) -> Approval:
    """The approval this call may use (claimed for it); else asks for one and refuses
    the call."""
    need = decision.approval
    assert need is not None
    approved = usable_approval(context, decision, rule=rule)
    if approved is None:
        approval = ask_for_approval(context, decision)
        raise ApprovalRequired(
            f"Approval #{approval.pk} is needed: {need.reason}",
            approval_id=approval.pk,
            rule=need.rule.value,
        )
    return approved


def prepare(
    context: CallContext,
    *,
    prompt_tokens: int,
    max_tokens: int | None,
    units: CallUnits,
    model_requested: str,
) -> Prepared:
    """Everything before a provider is asked: switches, route, approval, reservation.
    Raises `CallRefused` (logged) when the call may not be made."""
    try:
        toggle = _operation_toggle(context.operation)
        reading = context.reading or read(
            lambda table: state_keys(table, context.operation, via_gateway=context.via_gateway)
        )
        wanted = _switches(context.operation, context.via_gateway)
        read_already = reading.has(toggle_cache_keys(wanted))
        switches = toggles_enabled(wanted, cached=reading.values if read_already else None)
        if not switches.get("gateway.enabled", True):
            raise FeatureOff("The gateway is switched off (toggle gateway.enabled).")
        if not switches[toggle]:
            raise FeatureOff(f"Operation '{context.operation}' is switched off (toggle {toggle}).")
        try:
            decision = route(
                context.operation,
                context.mode,
                context.user,
                prompt_tokens,
                service=context.service,
                completion_tokens=max_tokens,
                budgets_enforced=switches[budgets.ENFORCED_TOGGLE],
                reading=reading,
                # Rule 3 (a budget past 100%) is found out from the reservation below:
                # no read of the ledgers first on the path of every call.
                check_budgets=False,
                units=units,
            )
        except TooManyTokens as exc:
            raise TooLong(str(exc), most=exc.most) from exc
        except UnpricedUnit as exc:
            raise UnpricedPart(str(exc), param=exc.param) from exc
        except RoutingError as exc:
            raise NotRoutable(str(exc), reason=exc.code) from exc
        approved = _approved(context, decision) if decision.needs_approval else None
        reserve = functools.partial(
            reservations.reserve,
            context.request_id,
            decision.estimated_cost,
            decision.budgets,
            enforced=switches[budgets.ENFORCED_TOGGLE],
            operation=context.operation,
            service=context.service,
            user=context.user,
        )
        try:
            # An approval answers its own rule: only one for going past a budget (rule
            # 3) lets the call past a limit; the budgets still hold for the others.
            reservation = reserve(approved=approves_past_budget(approved))
        except budgets.BudgetExceeded as exc:
            if approved is not None:
                give_back(approved, context)  # no call was made with it
            # Approval rule 3, when no budget is used up already: an Owner may let
            # this one call go past a limit.
            in_the_way = budgets.would_exceed(
                decision.budgets, decision.estimated_cost, enforced=True
            )
            if in_the_way is None:
                raise OverBudget(str(exc), **exc.details()) from exc
            decision.approval = past_budget(in_the_way)
            approved = _approved(context, decision, rule=Rule.OVER_BUDGET)
            reservation = reserve(approved=True)
    except CallRefused as exc:
        call_records.log_refusal(context, exc, model_requested, kind=units.kind)
        raise
    return Prepared(
        context, decision, reservation, None, time.perf_counter(), approved, units=units
    )


def prepare_chat(
    context: CallContext,
    messages: list[dict[str, Any]],
    *,
    tools: list[dict[str, Any]] | None,
    max_tokens: int | None,
    extra: dict[str, Any] | None,
    model_requested: str,
    units: CallUnits | None,
) -> Prepared:
    if units is None:
        try:
            units = chat_units(messages)
        except UnmeasurableRequest as exc:
            refusal = UnpricedPart(str(exc), param=exc.param)
            call_records.log_refusal(context, refusal, model_requested)
            raise refusal from exc
    prepared = prepare(
        context,
        prompt_tokens=pricing.estimate_prompt_tokens(messages),
        max_tokens=max_tokens,
        units=units,
        model_requested=model_requested,
    )
    prepared.request = ChatRequest(
        model=prepared.decision.model.model_id,
        messages=messages,
        tools=tools,
        max_tokens=max_tokens,
        extra=extra or {},
    )
    return prepared
