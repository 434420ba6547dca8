"""Every AI call in the product goes through here: toggles, route, approval,
budget reservation, the provider with fallbacks, exact cost, settlement, the log.

`complete()` returns a finished `CallResult`; `stream()` returns a `StreamingCall`
whose iterator yields `StreamChunk`s and then one `CallResult`. Refusals (a kill
switch, a needed approval, a budget) raise `CallRefused` before anything is spent,
and are logged like every other call.
What is not on the call path lives apart: its refusals and failures in
`call_refusals`, approvals in `call_approvals`, money held in `reservations`, the
ledger's SQL in `ledger`.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

from django.db import transaction

from controlplane.models import Approval, toggle_cache_keys, toggles_enabled
from controlplane.runtime import rows
from controlplane.tiers import StaffUser
from routing import budgets, metrics, pricing, reservations
from routing.approval_rules import approval_needed
from routing.call_approvals import ask_for_approval, usable_approval
from routing.call_refusals import (
    ApprovalRequired,
    CallFailed,
    CallRefused,
    FeatureOff,
    NotRoutable,
    OverBudget,
)
from routing.models import OperationLog, Provider, Reservation
from routing.providers import provider_for
from routing.providers.base import ChatRequest, Completion, ProviderError, StreamChunk, Usage
from routing.router import RouteDecision, RoutingError, cool_down, cooldown_keys, route
from routing.snapshots import ModelChoice, Reading, RoutingTable, read

log = logging.getLogger(__name__)


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
class CallResult:
    completion: Completion
    decision: RouteDecision
    model: ModelChoice  # the model that actually answered
    cost: Decimal
    cost_source: str
    log: OperationLog | None  # None until recorded (`complete(record_later=True)`)
    recorder: Callable[[], OperationLog] | None = None

    def record(self) -> OperationLog:
        """Settle the reservation and write the log row, once."""
        if self.log is None:
            assert self.recorder is not None
            self.log, self.recorder = self.recorder(), None
        return self.log


@dataclass
class _Prepared:
    context: CallContext
    decision: RouteDecision
    reservation: Reservation
    request: ChatRequest
    started: float
    attempts: list[dict[str, Any]] = field(default_factory=list)
    streaming: bool = False


def _refusal_log(context: CallContext, exc: CallRefused, model_requested: str) -> None:
    row = OperationLog.objects.create(
        request_id=context.request_id,
        operation=context.operation,
        mode=context.mode or "",
        user=context.user if getattr(context.user, "pk", None) else None,
        service=context.service,
        model_requested=model_requested,
        cost=Decimal(0),
        cost_source=OperationLog.CostSource.NONE,
        status=OperationLog.Status.REFUSED,
        error=f"{exc.code}: {exc}",
    )
    metrics.count_call(context, row, refusal=exc.code)


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


def _approved(context: CallContext, decision: RouteDecision) -> Approval:
    """The approval this call may use; else asks for one and refuses the call."""
    need = decision.approval
    assert need is not None
    approved = usable_approval(context, decision)
    if approved is None:
        approval = ask_for_approval(context, decision)
        raise ApprovalRequired(
            f"Approval #{approval.pk} is needed: {need.reason}",
            approval_id=approval.pk,
            rule=need.rule.value,
        )
    return approved


def _prepare(
    context: CallContext,
    messages: list[dict[str, Any]],
    *,
    tools: list[dict[str, Any]] | None,
    max_tokens: int | None,
    extra: dict[str, Any] | None,
    model_requested: str,
) -> _Prepared:
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
                pricing.estimate_prompt_tokens(messages),
                service=context.service,
                completion_tokens=max_tokens,
                budgets_enforced=switches[budgets.ENFORCED_TOGGLE],
                reading=reading,
                # Rule 3 (a budget past 100%) is found out from the reservation below:
                # no read of the ledgers first on the path of every call.
                check_budgets=False,
            )
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
            reservation = reserve(approved=approved is not None)
        except budgets.BudgetExceeded as exc:
            # Approval rule 3, when no budget is used up already: an Owner may let
            # this one call go past a limit.
            in_the_way = budgets.would_exceed(
                decision.budgets, decision.estimated_cost, enforced=True
            )
            if approved is not None or in_the_way is None:
                raise OverBudget(str(exc), **exc.details()) from exc
            decision.approval = approval_needed(decision.route, decision.estimated_cost, in_the_way)
            approved = _approved(context, decision)
            reservation = reserve(approved=True)
    except CallRefused as exc:
        _refusal_log(context, exc, model_requested)
        raise
    request = ChatRequest(
        model=decision.model.model_id,
        messages=messages,
        tools=tools,
        max_tokens=max_tokens,
        extra=extra or {},
    )
    return _Prepared(context, decision, reservation, request, time.perf_counter())


def _provider(decision: RouteDecision, model: ModelChoice) -> Any:
    provider = decision.providers.get(model.provider_id)
    if provider is None:  # not in the table the decision was made from: the database's
        provider = Provider.objects.get(pk=model.provider_id)
    return provider_for(provider)


def _record_failure(
    prepared: _Prepared, model: ModelChoice, exc: ProviderError, began: float
) -> None:
    prepared.attempts.append(
        {
            "model": model.model_id,
            "provider": model.provider_name,
            "outcome": "error",
            "error": str(exc)[:500],
            "status": exc.status,
            "latency_ms": int((time.perf_counter() - began) * 1000),
        }
    )
    if exc.retryable:
        cool_down(model, exc.retry_after)


def _finish(
    prepared: _Prepared,
    model: ModelChoice | None,
    completion: Completion | None,
    *,
    error: str = "",
    usage: Usage | None = None,
) -> tuple[OperationLog, Decimal, str]:
    """Price the call, settle or release its reservation, and write its log row."""
    cost, source, record = _priced(prepared, model, completion, error=error, usage=usage)
    return record(), cost, source


def _priced(
    prepared: _Prepared,
    model: ModelChoice | None,
    completion: Completion | None,
    *,
    error: str = "",
    usage: Usage | None = None,
) -> tuple[Decimal, str, Callable[[], OperationLog]]:
    """The call's cost, and what records it: the settlement (or release) of its
    reservation and its log row, to run now or once the answer is on its way."""
    usage = completion.usage if completion is not None else usage
    cost, source = Decimal(0), str(OperationLog.CostSource.NONE)
    if model is not None and usage is not None:
        try:
            cost, source = pricing.cost_of(model, usage)
        except pricing.PriceMissing as exc:
            # The call happened; its cost is unknown, and the log says so.
            source, error = str(exc.source), (error + " " if error else "") + str(exc)
    latency_ms = int((time.perf_counter() - prepared.started) * 1000)

    def record() -> OperationLog:
        # One transaction for the settlement and the log row: one commit (one disk
        # flush) instead of two, and the ledger and the log never disagree.
        row = _log_row(prepared, model, usage, cost, source, error, latency_ms)
        if model is not None and usage is not None:
            reservations.settle(prepared.reservation, cost, log_row=row)
        else:
            with transaction.atomic():
                reservations.release(prepared.reservation)
                rows.insert([row])
        metrics.count_call(prepared.context, row, provider_started=prepared.started)
        return row

    return cost, source, record


def _log_row(
    prepared: _Prepared,
    model: ModelChoice | None,
    usage: Usage | None,
    cost: Decimal,
    source: str,
    error: str,
    latency_ms: int,
) -> OperationLog:
    """The call's log row, not yet saved: it is inserted with the settlement."""
    decision, context = prepared.decision, prepared.context
    row = OperationLog(
        request_id=context.request_id,
        operation=context.operation,
        mode=decision.mode or "",
        user=context.user if getattr(context.user, "pk", None) else None,
        service=context.service,
        model_requested=decision.model.model_id,
        model_used=model.model_id if model else "",
        provider=model.provider_name if model else "",
        fallback_used=model is not None and model.pk != decision.model.pk,
        ab_variant=decision.ab_variant,
        stream=prepared.streaming,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        cached_tokens=usage.cached_tokens if usage else 0,
        cache_write_tokens=usage.cache_write_tokens if usage else 0,
        reasoning_tokens=usage.reasoning_tokens if usage else 0,
        cost=cost,
        cost_source=source,
        latency_ms=latency_ms,
        status=OperationLog.Status.ERROR if error else OperationLog.Status.OK,
        error=error,
        attempts=prepared.attempts,
    )
    return row


def complete(
    context: CallContext,
    messages: list[dict[str, Any]],
    *,
    tools: list[dict[str, Any]] | None = None,
    max_tokens: int | None = None,
    extra: dict[str, Any] | None = None,
    model_requested: str = "",
    record_later: bool = False,
) -> CallResult:
    """`record_later`: the reservation's settlement and the log row are left to the
    caller, who runs `result.record()` once the answer is on its way (the gateway,
    so the caller of an AI call does not wait for its bookkeeping); `result.log` is
    then None until it ran. If the process stops before, the stale sweep writes the
    call off at its reservation (`stale_reservations.write_off_stale_reservations`)."""
    prepared = _prepare(
        context,
        messages,
        tools=tools,
        max_tokens=max_tokens,
        extra=extra,
        model_requested=model_requested,
    )
    last_error: ProviderError | None = None
    for model in prepared.decision.candidates:
        began = time.perf_counter()
        try:
            request = ChatRequest(**{**prepared.request.__dict__, "model": model.model_id})
            completion = _provider(prepared.decision, model).complete(request)
        except ProviderError as exc:
            _record_failure(prepared, model, exc, began)
            last_error = exc
            if not exc.retryable:
                break
            continue
        prepared.attempts.append(
            {
                "model": model.model_id,
                "provider": model.provider_name,
                "outcome": "ok",
                "latency_ms": int((time.perf_counter() - began) * 1000),
            }
        )
        cost, source, record = _priced(prepared, model, completion)
        result = CallResult(completion, prepared.decision, model, cost, source, None, record)
        if not record_later:
            result.record()
        return result
    message = f"Every model failed for '{context.operation}': {last_error}"
    _finish(prepared, None, None, error=message)
    raise CallFailed(message, status=last_error.status if last_error else None)


@dataclass
class StreamingCall:
    decision: RouteDecision
    events: Generator[StreamChunk | CallResult]

    def __iter__(self) -> Iterator[StreamChunk | CallResult]:
        return self.events


def stream(
    context: CallContext,
    messages: list[dict[str, Any]],
    *,
    tools: list[dict[str, Any]] | None = None,
    max_tokens: int | None = None,
    extra: dict[str, Any] | None = None,
    model_requested: str = "",
) -> StreamingCall:
    """Refusals raise here, before anything streams; provider failures before the
    first chunk fall back to the next model, after it they end the stream."""
    prepared = _prepare(
        context,
        messages,
        tools=tools,
        max_tokens=max_tokens,
        extra=extra,
        model_requested=model_requested,
    )
    prepared.streaming = True
    events = _stream_events(prepared)
    # Run it into its try block: a generator closed before it started would skip its
    # `finally`, leaving the reservation held and the call unlogged.
    next(events)
    return StreamingCall(prepared.decision, cast(Generator[StreamChunk | CallResult], events))


def _stream_events(prepared: _Prepared) -> Generator[StreamChunk | CallResult | None]:
    """Yields None once, for `stream()` to prime it, then the call's chunks and result."""
    finished = False
    model: ModelChoice | None = None
    streamed: list[str] = []
    try:
        yield None
        last_error: ProviderError | None = None
        for model in prepared.decision.candidates:
            began = time.perf_counter()
            request = ChatRequest(**{**prepared.request.__dict__, "model": model.model_id})
            sent_any = False
            try:
                for item in _provider(prepared.decision, model).stream(request):
                    if isinstance(item, Completion):
                        prepared.attempts.append(
                            {
                                "model": model.model_id,
                                "provider": model.provider_name,
                                "outcome": "ok",
                                "latency_ms": int((time.perf_counter() - began) * 1000),
                            }
                        )
                        row, cost, source = _finish(prepared, model, item)
                        finished = True
                        yield CallResult(item, prepared.decision, model, cost, source, row)
                        return
                    sent_any = True
                    streamed.append(item.content)
                    yield item
            except ProviderError as exc:
                _record_failure(prepared, model, exc, began)
                last_error = exc
                if sent_any or not exc.retryable:
                    break  # the client has part of an answer: no silent switch of model
        message = f"Every model failed for '{prepared.context.operation}': {last_error}"
        finished = True
        if streamed and model is not None:
            # Tokens were produced and are paid for: price what was streamed.
            _finish(prepared, model, None, error=message, usage=_streamed_usage(prepared, streamed))
        else:
            _finish(prepared, None, None, error=message)
        raise CallFailed(message, status=last_error.status if last_error else None)
    finally:
        if not finished:
            # The client went away mid-stream: what was generated is still paid for.
            _finish(
                prepared,
                model,
                None,
                error="client disconnected mid-stream",
                usage=_streamed_usage(prepared, streamed) if model is not None else None,
            )


def _streamed_usage(prepared: _Prepared, streamed: list[str]) -> Usage:
    return Usage(
        prompt_tokens=prepared.decision.prompt_tokens,
        completion_tokens=pricing.estimate_prompt_tokens(
            [{"role": "assistant", "content": "".join(streamed)}]
        ),
    )
