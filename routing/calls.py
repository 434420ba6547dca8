"""Every AI call in the product goes through here: toggles, route, approval,
budget reservation, the provider with fallbacks, exact cost, settlement, the log.

`complete()` returns a finished `CallResult`; `stream()` returns a `StreamingCall`
whose iterator yields `StreamChunk`s and then one `CallResult`. Refusals (a kill
switch, a needed approval, a budget) raise `CallRefused` before anything is spent,
and are logged like every other call.
What is not on the call path lives apart: everything before a provider is asked
(switches, route, approval, reservation) in `call_preparation`, refusals and failures
in `call_refusals`, approvals in `call_approvals`, how a call is recorded (its
settlement and log row) in `call_records`, money held in `reservations`, the
ledger's SQL in `ledger`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, cast

from django.db import InterfaceError, OperationalError

from routing import call_records, pricing
from routing.call_preparation import (
    CallContext,
    Prepared,
    prepare,
    prepare_chat,
)
from routing.call_refusals import (
    CallFailed,
)
from routing.call_units import CallUnits
from routing.models import OperationLog, Provider
from routing.providers import provider_for
from routing.providers.base import Completion, ProviderError, StreamChunk, Usage
from routing.router import (
    RouteDecision,
    cool_down,
)
from routing.snapshots import ModelChoice

log = logging.getLogger(__name__)


@dataclass
class CallResult:
    completion: Completion
    decision: RouteDecision
    model: ModelChoice  # the model that actually answered
    cost: Decimal
    cost_source: str
    log: OperationLog | None  # None until recorded (`complete(record_later=True)`)
    recorder: Callable[[str], OperationLog] | None = None

    def record(self, problem: str = "") -> OperationLog:
        """Settle the reservation and write the log row, once. `problem`: what went
        wrong after the provider answered (audio cut off mid-stream); the call is
        still paid for, and its row says so."""
        if self.log is None:
            assert self.recorder is not None
            self.log, self.recorder = self.recorder(problem), None
        return self.log


def _provider(decision: RouteDecision, model: ModelChoice) -> Any:
    provider = decision.providers.get(model.provider_id)
    if provider is None:  # not in the table the decision was made from: the database's
        provider = Provider.objects.get(pk=model.provider_id)
    return provider_for(provider, api=decision.route.api)


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
    prepared: Prepared, model: ModelChoice, exc: ProviderError, began: float
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


# What a call asks of a provider's client, given the model that is to answer: each
# kind of call asks its own (`complete` a chat, `embed` embeddings, ...).
Ask = Callable[[Any, ModelChoice], Completion]


def complete(
    context: CallContext,
    messages: list[dict[str, Any]],
    *,
    tools: list[dict[str, Any]] | None = None,
    max_tokens: int | None = None,
    extra: dict[str, Any] | None = None,
    model_requested: str = "",
    record_later: bool = False,
    units: CallUnits | None = None,
) -> CallResult:
    """A chat. `record_later`: the reservation's settlement and the log row are left
    to the caller, who runs `result.record()` once the answer is on its way (the
    gateway, so the caller of an AI call does not wait for its bookkeeping);
    `result.log` is then None until it ran. If the process stops before, the stale
    sweep writes the call off at its reservation
    (`stale_reservations.write_off_stale_reservations`). `units`: what the messages
    carry besides text (`call_units.chat_units`), when the caller measured it."""
    prepared = prepare_chat(
        context,
        messages,
        tools=tools,
        max_tokens=max_tokens,
        extra=extra,
        model_requested=model_requested,
        units=units,
    )
    chat = prepared.request
    assert chat is not None

    def ask(client: Any, model: ModelChoice) -> Completion:
        return cast(Completion, client.complete(replace(chat, model=model.model_id)))

    return _answered(prepared, ask, record_later=record_later)


def perform(
    context: CallContext,
    units: CallUnits,
    ask: Ask,
    *,
    prompt_tokens: int = 0,
    model_requested: str = "",
    record_later: bool = False,
) -> CallResult:
    """A call of another kind than chat (`units.kind`: embeddings, transcription,
    speech), on the same path: switches, route (models of its kind with its prices),
    approval, reservation of its estimate, fallbacks, exact cost, the log. `ask` puts
    the call to a provider's client for a model and returns its answer, with the
    usage the provider reported; units it does not report are the request's."""
    prepared = prepare(
        context,
        prompt_tokens=prompt_tokens,
        max_tokens=None,
        units=units,
        model_requested=model_requested,
    )
    return _answered(prepared, ask, record_later=record_later)


def _answered(prepared: Prepared, ask: Ask, *, record_later: bool) -> CallResult:
    try:
        return _complete(prepared, ask, record_later=record_later)
    except (CallFailed, OperationalError, InterfaceError):
        raise  # recorded already; or the database is away, and the stale sweep will
    except Exception as exc:
        # Whatever failed after the reservation, the call is recorded now, with its
        # real error, and its reservation given back: nothing is left half-done.
        message = f"The call failed: {type(exc).__name__}: {exc}"
        log.exception("call %s failed after its reservation", prepared.context.request_id)
        call_records.finish(prepared, None, None, error=message)
        raise CallFailed(message) from exc


def _complete(prepared: Prepared, ask: Ask, *, record_later: bool) -> CallResult:
    context = prepared.context
    last_error: ProviderError | None = None
    for model in prepared.decision.candidates:
        began = time.perf_counter()
        try:
            completion = ask(_provider(prepared.decision, model), model)
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
        cost, source, record = call_records.priced(prepared, model, completion)
        result = CallResult(completion, prepared.decision, model, cost, source, None, record)
        if not record_later:
            result.record()
        return result
    message = f"Every model failed for '{context.operation}': {last_error}"
    call_records.finish(prepared, None, None, error=message)
    raise CallFailed(message, status=last_error.status if last_error else None)


# Why a stream that its caller closed early ended: a cancelled call, not an error.
CALLER_WENT_AWAY = "Cancelled by its caller mid-stream (the client went away or the run stopped)."


@dataclass
class StreamingCall:
    decision: RouteDecision
    events: Generator[StreamChunk | CallResult]
    prepared: Prepared | None = None

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
    units: CallUnits | None = None,
) -> StreamingCall:
    """A chat, streamed. Refusals raise here, before anything streams; provider
    failures before the first chunk fall back to the next model, after it they end
    the stream."""
    prepared = prepare_chat(
        context,
        messages,
        tools=tools,
        max_tokens=max_tokens,
        extra=extra,
        model_requested=model_requested,
        units=units,
    )
    prepared.streaming = True
    events = _stream_events(prepared)
    # Run it into its try block: a generator closed before it started would skip its
    # `finally`, leaving the reservation held and the call unlogged.
    next(events)
    return StreamingCall(
        prepared.decision, cast(Generator[StreamChunk | CallResult], events), prepared
    )


def _stream_events(prepared: Prepared) -> Generator[StreamChunk | CallResult | None]:
    """Yields None once, for `stream()` to prime it, then the call's chunks and result."""
    finished = False
    model: ModelChoice | None = None
    streamed: list[str] = []
    cause = CALLER_WENT_AWAY
    try:
        yield None
        last_error: ProviderError | None = None
        for model in prepared.decision.candidates:
            began = time.perf_counter()
            assert prepared.request is not None
            request = replace(prepared.request, model=model.model_id)
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
                row, cost, source = call_records.finish(prepared, model, answer)
                finished = True
                yield CallResult(answer, prepared.decision, model, cost, source, row)
                return
        message = f"Every model failed for '{prepared.context.operation}': {last_error}"
        finished = True
        if streamed and model is not None:
            # Tokens were produced and are paid for: price what was streamed.
            call_records.finish(
                prepared, model, None, error=message, usage=_streamed_usage(prepared, streamed)
            )
        else:
            call_records.finish(prepared, None, None, error=message)
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
            call_records.finish(
                prepared,
                model,
                None,
                error=prepared.ended_because or cause,
                usage=_streamed_usage(prepared, streamed) if model is not None else None,
                cancelled=not prepared.ended_because and cause == CALLER_WENT_AWAY,
            )


def _streamed_usage(prepared: Prepared, streamed: list[str]) -> Usage:
    return Usage(
        prompt_tokens=prepared.decision.prompt_tokens,
        completion_tokens=pricing.estimate_prompt_tokens(
            [{"role": "assistant", "content": "".join(streamed)}]
        ),
    )
