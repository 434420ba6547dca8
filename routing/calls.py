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
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

from django.db import InterfaceError, OperationalError, transaction

from controlplane.models import Approval, toggle_cache_keys, toggles_enabled
from controlplane.runtime import rows
from controlplane.tiers import StaffUser
from routing import budgets, pricing, reservations
from routing.approval_rules import Rule, past_budget
from routing.call_approvals import (
    approves_past_budget,
    ask_for_approval,
    give_back,
    mark_used,
    usable_approval,
)
from routing.call_refusals import (
    ApprovalRequired,
    CallFailed,
    CallRefused,
    FeatureOff,
    NotRoutable,
    OverBudget,
    TooLong,
)
from routing.models import OperationLog, Provider, Reservation
from routing.providers import provider_for
from routing.providers.base import ChatRequest, Completion, ProviderError, StreamChunk, Usage
from routing.router import (
    RouteDecision,
    RoutingError,
    TooManyTokens,
    cool_down,
    cooldown_keys,
    route,
    token_cap,
)
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
    # Claimed for this call; used up once a provider answered, else given back.
    approval: Approval | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    streaming: bool = False
    ended_because: str = ""  # why a stream was closed early, when not its client


def _refusal_log(context: CallContext, exc: CallRefused, model_requested: str) -> None:
    OperationLog(
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
    ).fit_columns().save()


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
        except TooManyTokens as exc:
            raise TooLong(str(exc), most=exc.most) from exc
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
        _refusal_log(context, exc, model_requested)
        raise
    request = ChatRequest(
        model=decision.model.model_id,
        messages=messages,
        tools=tools,
        max_tokens=max_tokens,
        extra=extra or {},
    )
    return _Prepared(context, decision, reservation, request, time.perf_counter(), approved)


def _provider(decision: RouteDecision, model: ModelChoice) -> Any:
    provider = decision.providers.get(model.provider_id)
    if provider is None:  # not in the table the decision was made from: the database's
        provider = Provider.objects.get(pk=model.provider_id)
    return provider_for(provider)


def _as_provider_error(exc: Exception, model: ModelChoice) -> ProviderError:
    """A provider's failure as the call path handles one. Anything but a
    `ProviderError` is a defect of the provider's client (or its answer): recorded as
    the call's error, with no fallback tried (it may fail the same way)."""
    if isinstance(exc, ProviderError):
        return exc
    log.exception("the client of %s failed", model.provider_name)
    return ProviderError(
        f"{model.provider_name}: {type(exc).__name__}: {exc}", retryable=False, code="client_error"
    )


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
    cost, source, flag = Decimal(0), str(OperationLog.CostSource.NONE), ""
    if model is not None and usage is not None:
        # What the provider reported is checked before it is priced: a negative or
        # absurd figure must not reach the ledger (nor the caller's X-Cost-USD).
        usage, flag = pricing.checked_usage(
            usage,
            prompt_tokens=prepared.decision.prompt_tokens,
            completion_tokens=prepared.decision.completion_tokens,
            most_tokens=token_cap(model),
        )
        if flag:
            log.warning("call %s: %s", prepared.context.request_id, flag)
        if completion is not None:
            completion.usage = usage
        try:
            cost, source = pricing.cost_of(model, usage)
        except pricing.PriceMissing as exc:
            # The call happened; its cost is unknown, and the log says so.
            source, error = str(exc.source), (error + " " if error else "") + str(exc)
    latency_ms = int((time.perf_counter() - prepared.started) * 1000)
    settles = model is not None and usage is not None

    def record() -> OperationLog:
        row = _log_row(prepared, model, usage, cost, source, error, latency_ms, flag)
        try:
            with _undoable():
                _settle_with_log(prepared, row, cost if settles else None)
        except (OperationalError, InterfaceError):
            raise  # the database is away: the stale sweep writes the call off later
        except Exception as exc:
            # Never silently: the call is recorded all the same, plainly, with why.
            log.exception("recording call %s failed; recording it plainly", row.request_id)
            row = _plain_row(row, f"{type(exc).__name__} while recording the call: {exc}")
            _settle_with_log(prepared, row, cost if settles else None)
        return row

    return cost, source, record


def _undoable() -> AbstractContextManager[Any]:
    """A savepoint inside a caller's transaction, so a failed write can be followed by
    another; nothing outside one (the settlement is one statement, or one transaction
    of its own, already: no extra round trips on the path of every call)."""
    return transaction.atomic() if transaction.get_connection().in_atomic_block else nullcontext()


def _settle_with_log(prepared: _Prepared, row: OperationLog, cost: Decimal | None) -> None:
    """Settle at `cost` (None: release) and insert the log row, in one transaction: one
    commit instead of two, and the ledger and the log never disagree. The call's
    approval is used up with them when a provider answered (a settled call), else
    given back."""
    approval, reservation = prepared.approval, prepared.reservation
    with transaction.atomic() if approval is not None else nullcontext():
        if cost is not None:
            reservations.settle(reservation, cost, log_row=row)
        else:
            with transaction.atomic():
                reservations.release(reservation)
                rows.insert([row])
        if approval is not None:
            (mark_used if cost is not None else give_back)(approval, prepared.context)


def _plain_row(row: OperationLog, why: str) -> OperationLog:
    """A log row that cannot fail to be written: the same call, every count that a
    constraint could refuse at zero, the cost kept (it was checked), and why."""
    plain = OperationLog(
        request_id=row.request_id,
        operation=row.operation,
        mode=row.mode,
        user_id=row.user_id,
        service=row.service,
        model_requested=row.model_requested,
        model_used=row.model_used,
        provider=row.provider,
        stream=row.stream,
        cost=row.cost,
        cost_source=row.cost_source,
        status=OperationLog.Status.ERROR,
        error="; ".join(filter(None, [row.error, why]))[:2000].replace("\x00", ""),
        usage_flag=row.usage_flag.replace("\x00", ""),
    )
    return plain.fit_columns()


def _log_row(
    prepared: _Prepared,
    model: ModelChoice | None,
    usage: Usage | None,
    cost: Decimal,
    source: str,
    error: str,
    latency_ms: int,
    usage_flag: str = "",
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
        usage_flag=usage_flag,
        attempts=prepared.attempts,
    )
    return row.fit_columns()


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
    try:
        return _complete(prepared, record_later=record_later)
    except (CallFailed, OperationalError, InterfaceError):
        raise  # recorded already; or the database is away, and the stale sweep will
    except Exception as exc:
        # Whatever failed after the reservation, the call is recorded now, with its
        # real error, and its reservation given back: nothing is left half-done.
        message = f"The call failed: {type(exc).__name__}: {exc}"
        log.exception("call %s failed after its reservation", context.request_id)
        _finish(prepared, None, None, error=message)
        raise CallFailed(message) from exc


def _complete(prepared: _Prepared, *, record_later: bool) -> CallResult:
    context = prepared.context
    last_error: ProviderError | None = None
    for model in prepared.decision.candidates:
        began = time.perf_counter()
        try:
            request = ChatRequest(**{**prepared.request.__dict__, "model": model.model_id})
            completion = _provider(prepared.decision, model).complete(request)
        except Exception as exc:
            last_error = _as_provider_error(exc, model)
            _record_failure(prepared, model, last_error, began)
            if not last_error.retryable:
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
    prepared: _Prepared | None = None

    def __iter__(self) -> Iterator[StreamChunk | CallResult]:
        return self.events

    def close(self, reason: str = "") -> None:
        """End the call now: it settles (what was streamed is paid for) and logs
        `reason` as its error; without one, the client went away."""
        if reason and self.prepared is not None:
            self.prepared.ended_because = reason
        self.events.close()


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
    return StreamingCall(
        prepared.decision, cast(Generator[StreamChunk | CallResult], events), prepared
    )


def _stream_events(prepared: _Prepared) -> Generator[StreamChunk | CallResult | None]:
    """Yields None once, for `stream()` to prime it, then the call's chunks and result."""
    finished = False
    model: ModelChoice | None = None
    streamed: list[str] = []
    cause = "client disconnected mid-stream"
    try:
        yield None
        last_error: ProviderError | None = None
        for model in prepared.decision.candidates:
            began = time.perf_counter()
            request = ChatRequest(**{**prepared.request.__dict__, "model": model.model_id})
            sent_any = False
            answer: Completion | None = None
            try:
                for item in _provider(prepared.decision, model).stream(request):
                    if isinstance(item, Completion):
                        answer = item
                        break
                    sent_any = True
                    streamed.append(item.content)
                    yield item
            except Exception as exc:
                last_error = _as_provider_error(exc, model)
                _record_failure(prepared, model, last_error, began)
                if sent_any or not last_error.retryable:
                    break  # the client has part of an answer: no silent switch of model
                continue
            if answer is not None:
                prepared.attempts.append(
                    {
                        "model": model.model_id,
                        "provider": model.provider_name,
                        "outcome": "ok",
                        "latency_ms": int((time.perf_counter() - began) * 1000),
                    }
                )
                row, cost, source = _finish(prepared, model, answer)
                finished = True
                yield CallResult(answer, prepared.decision, model, cost, source, row)
                return
        message = f"Every model failed for '{prepared.context.operation}': {last_error}"
        finished = True
        if streamed and model is not None:
            # Tokens were produced and are paid for: price what was streamed.
            _finish(prepared, model, None, error=message, usage=_streamed_usage(prepared, streamed))
        else:
            _finish(prepared, None, None, error=message)
        raise CallFailed(message, status=last_error.status if last_error else None)
    except (GeneratorExit, CallFailed):
        raise
    except Exception as exc:
        # Recording the answer failed (or something else did): the call is still
        # recorded below, with this error rather than as a client that went away.
        log.exception("streamed call %s failed", prepared.context.request_id)
        cause = f"The call failed: {type(exc).__name__}: {exc}"
        raise CallFailed(cause) from exc
    finally:
        if not finished:
            # The client went away mid-stream (or the call failed): what was generated
            # is still paid for.
            _finish(
                prepared,
                model,
                None,
                error=prepared.ended_because or cause,
                usage=_streamed_usage(prepared, streamed) if model is not None else None,
            )


def _streamed_usage(prepared: _Prepared, streamed: list[str]) -> Usage:
    return Usage(
        prompt_tokens=prepared.decision.prompt_tokens,
        completion_tokens=pricing.estimate_prompt_tokens(
            [{"role": "assistant", "content": "".join(streamed)}]
        ),
    )
