"""How an AI call is recorded: its cost from what the provider reported (checked
first), the settlement or release of its reservation, the use of its approval, and
its `OperationLog` row, together, in one transaction. A row that cannot be written
as it is is written plainly, with why: a call that happened is never left unlogged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.db import InterfaceError, OperationalError, transaction

from controlplane.live import HOME_GROUP, home_announcements
from controlplane.runtime import rows
from routing import metrics, pricing, reservations
from routing.call_approvals import give_back, mark_used
from routing.call_refusals import CallRefused
from routing.models import OperationLog
from routing.models.catalog import CallKind
from routing.providers.base import Completion, Usage
from routing.router import token_cap
from routing.snapshots import ModelChoice

if TYPE_CHECKING:
    from routing.call_preparation import CallContext, Prepared

log = logging.getLogger(__name__)


def log_refusal(
    context: CallContext, exc: CallRefused, model_requested: str, *, kind: str = CallKind.CHAT
) -> None:
    row = OperationLog(
        request_id=context.request_id,
        operation=context.operation,
        kind=kind,
        mode=context.mode or "",
        user=context.user if getattr(context.user, "pk", None) else None,
        service=context.service,
        model_requested=model_requested,
        cost=Decimal(0),
        cost_source=OperationLog.CostSource.NONE,
        status=OperationLog.Status.REFUSED,
        error=f"{exc.code}: {exc}",
    ).fit_columns()
    row.save()
    metrics.count_call(context, row, refusal=exc.code)
    home_announcements.announce(HOME_GROUP, "home.spend")


def finish(
    prepared: Prepared,
    model: ModelChoice | None,
    completion: Completion | None,
    *,
    error: str = "",
    usage: Usage | None = None,
    cancelled: bool = False,
) -> tuple[OperationLog, Decimal, str]:
    """Price the call, settle or release its reservation, and write its log row.
    `cancelled`: its caller stopped it (logged as cancelled, with `error` saying so)."""
    cost, source, record = priced(
        prepared, model, completion, error=error, usage=usage, cancelled=cancelled
    )
    return record(""), cost, source


def priced(
    prepared: Prepared,
    model: ModelChoice | None,
    completion: Completion | None,
    *,
    error: str = "",
    usage: Usage | None = None,
    cancelled: bool = False,
) -> tuple[Decimal, str, Callable[[str], OperationLog]]:
    """The call's cost, and what records it: the settlement (or release) of its
    reservation and its log row, to run now or once the answer is on its way."""
    usage = completion.usage if completion is not None else usage
    cost, source, flag = Decimal(0), str(OperationLog.CostSource.NONE), ""
    units = prepared.units
    if usage is not None:
        # What the provider does not report (images, seconds...) is what was sent.
        usage = units.fill(usage)
    if model is not None and usage is not None:
        # What the provider reported is checked before it is priced: a negative or
        # absurd figure must not reach the ledger (nor the caller's X-Cost-USD).
        usage, flag = pricing.checked_usage(
            usage,
            prompt_tokens=prepared.decision.prompt_tokens,
            completion_tokens=prepared.decision.completion_tokens,
            most_tokens=_most_tokens(prepared, model),
        )
        if flag:
            log.warning("call %s: %s", prepared.context.request_id, flag)
        if completion is not None:
            completion.usage = usage
        try:
            cost, source = pricing.cost_of(model, usage, units.kind)
        except pricing.PriceMissing as exc:
            # The call happened; its cost is unknown, and the log says so.
            source, error = str(exc.source), (error + " " if error else "") + str(exc)
    if units.assumed and usage is not None:
        flag = " ".join(filter(None, [flag, f"Assumed: {units.assumed}."]))
    latency_ms = int((time.perf_counter() - prepared.started) * 1000)
    settles = model is not None and usage is not None

    def record(problem: str) -> OperationLog:
        failure = "; ".join(filter(None, [error, problem]))
        row = _log_row(prepared, model, usage, cost, source, failure, latency_ms, flag)
        if cancelled:
            row.status = OperationLog.Status.CANCELLED
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
        metrics.count_call(prepared.context, row, provider_started=prepared.started)
        home_announcements.announce(HOME_GROUP, "home.spend")
        return row

    return cost, source, record


def _most_tokens(prepared: Prepared, model: ModelChoice) -> int:
    """The most tokens a provider can mean to report for this call: its model's
    context; for embeddings, whose inputs are each embedded on their own, no more
    tokens than the inputs have characters (four a token in the estimate)."""
    if prepared.units.kind == CallKind.EMBEDDING:
        return max(token_cap(model), prepared.decision.prompt_tokens * pricing.CHARS_PER_TOKEN)
    return token_cap(model)


def _undoable() -> AbstractContextManager[Any]:
    """A savepoint inside a caller's transaction, so a failed write can be followed by
    another; nothing outside one (the settlement is one statement, or one transaction
    of its own, already: no extra round trips on the path of every call)."""
    return transaction.atomic() if transaction.get_connection().in_atomic_block else nullcontext()


def _settle_with_log(prepared: Prepared, row: OperationLog, cost: Decimal | None) -> None:
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
        kind=row.kind,
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
    prepared: Prepared,
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
        kind=prepared.units.kind,
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
        images=usage.images if usage else 0,
        audio_seconds=usage.audio_seconds if usage else 0,
        video_seconds=usage.video_seconds if usage else 0,
        characters=usage.characters if usage else 0,
        cost=cost,
        cost_source=source,
        latency_ms=latency_ms,
        status=OperationLog.Status.ERROR if error else OperationLog.Status.OK,
        error=error,
        usage_flag=usage_flag,
        attempts=prepared.attempts,
    )
    return row.fit_columns()
