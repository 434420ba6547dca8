"""What an AI call costs, in Decimal USD, exactly.

`cost_of` prices a call that happened: the provider's own figure when it reports one
(OpenRouter's `usage.cost`), zero for the offline model, else its units times catalog
prices: tokens (cached, cache-write and reasoning tokens at their own prices) and the
units besides tokens a call of its kind is measured in (`UNIT_PRICES`: images,
seconds of audio and video, characters). `estimate_cost` is the upper bound that
routing and budget reservations use before a call. A model missing a price the call
needs is never priced at zero: both raise `PriceMissing`.

Every figure is `int * Decimal` summed in a context wide enough that nothing is
rounded (and `Inexact` is trapped to prove it), so a cost is exact to the last digit
of the catalog's prices.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from decimal import Decimal, Inexact, localcontext
from typing import Any, Protocol

from controlplane.money import ZERO
from routing.models import OperationLog
from routing.models.catalog import KIND_PRICES, UNIT_PRICES, CallKind
from routing.providers.base import Usage

CostSource = OperationLog.CostSource

# estimate_prompt_tokens: a cheap, deterministic stand-in for a tokenizer.
CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4  # role and separators the chat format adds to each message
REPLY_PRIMING_TOKENS = 3  # the assistant header every reply starts with
IMAGE_TOKENS = 85  # OpenAI's flat charge for a low-detail image part

# Prices have at most 30 digits and token counts about 10, so 60 digits never round.
_EXACT_DIGITS = 60


class PricedModel(Protocol):
    """A catalog model (`AIModel`) or routing's in-memory copy of one (`ModelChoice`)."""

    @property
    def model_id(self) -> str: ...
    @property
    def is_offline(self) -> bool: ...
    @property
    def price_prompt(self) -> Decimal | None: ...
    @property
    def price_completion(self) -> Decimal | None: ...
    @property
    def price_cache_read(self) -> Decimal | None: ...
    @property
    def price_cache_write(self) -> Decimal | None: ...
    @property
    def price_reasoning(self) -> Decimal | None: ...
    @property
    def price_request(self) -> Decimal | None: ...
    @property
    def price_image(self) -> Decimal | None: ...
    @property
    def price_audio_second(self) -> Decimal | None: ...
    @property
    def price_video_second(self) -> Decimal | None: ...
    @property
    def price_character(self) -> Decimal | None: ...


class PriceMissing(Exception):
    """The catalog lacks a price a call needs (`needed_prices`): it cannot be priced.

    Raised instead of returning zero. A caller that must still record a call that
    already happened logs it with `cost_source = PriceMissing.source` ("unpriced")
    and this message, so the gap shows up rather than passing for free.
    """

    source = CostSource.UNPRICED

    def __init__(self, model: PricedModel, missing: Iterable[str]) -> None:
        self.model_id = model.model_id
        self.missing = tuple(missing)
        kinds = " and ".join(name.removeprefix("price_").replace("_", " ") for name in self.missing)
        super().__init__(
            f"Model {self.model_id} has no {kinds} price in the catalog, so its cost is "
            "unknown (it is flagged, never priced at zero). Run `bin/manage sync_models` "
            "or set its prices in the admin."
        )


def needed_prices(kind: str, units: Any = None) -> tuple[str, ...]:
    """The catalog prices a call of `kind` is charged by: its kind's (`KIND_PRICES`),
    and for a chat, the price of each unit its messages carry (`units`, a `Usage` or
    `CallUnits`: an image part needs a per-image price)."""
    needed = KIND_PRICES[kind]
    if kind != CallKind.CHAT or units is None:
        return needed
    return needed + tuple(
        price for unit, price in UNIT_PRICES.items() if getattr(units, unit, 0) > 0
    )


def missing_prices(model: PricedModel, kind: str, units: Any = None) -> list[str]:
    """The prices of `needed_prices` the catalog does not list for `model`."""
    if model.is_offline:
        return []
    return [name for name in needed_prices(kind, units) if getattr(model, name) is None]


def cost_of(model: PricedModel, usage: Usage, kind: str = CallKind.CHAT) -> tuple[Decimal, str]:
    """The cost of one call and where the figure comes from (an `OperationLog.CostSource`).

    - "offline": the offline model is free (it reports zero, or nothing).
    - "provider": the provider reported the cost; it wins, exactly as reported (a
      scripted stand-in for the offline model may report a real cost).
    - "catalog": for a chat, uncached prompt tokens (prompt - cached - cache-write) at
      the prompt price; cached tokens at the cache-read price and cache-write tokens
      at the cache-write price, each falling back to the prompt price when not listed;
      reasoning tokens (a part of the completion tokens) at the reasoning price when
      listed, the rest of the completion at the completion price. For embeddings, the
      input tokens at the prompt price; transcription and speech have no token charge.
      Then every unit besides tokens (`UNIT_PRICES`) at its price, and the
      per-request price once. A per-request price that is not listed adds nothing.

    Raises `PriceMissing` when a price the call needs is unknown (`needed_prices`):
    the choice is to fail loudly rather than return a zero that could be summed as
    real spend. Token counts follow OpenAI's convention (cached and cache-write tokens
    are part of the prompt, reasoning tokens part of the completion); a provider that
    reports them separately never yields a negative count, the difference is floored
    at zero.
    """
    if model.is_offline and not usage.reported_cost:
        # The offline model reports a cost of zero; it is free, not provider-priced.
        return ZERO, CostSource.OFFLINE
    if usage.reported_cost is not None:
        return usage.reported_cost, CostSource.PROVIDER
    missing = missing_prices(model, kind, usage)
    if missing:
        raise PriceMissing(model, missing)
    with _exact():
        cost = _units_cost(model, usage) + _listed_or(model.price_request, ZERO)
        if kind == CallKind.EMBEDDING:
            return cost + usage.prompt_tokens * _price(model.price_prompt), CostSource.CATALOG
        if kind != CallKind.CHAT:
            return cost, CostSource.CATALOG
        prompt_price, completion_price = _required_prices(model)
        cache_read_price = _listed_or(model.price_cache_read, prompt_price)
        cache_write_price = _listed_or(model.price_cache_write, prompt_price)
        uncached = max(usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens, 0)
        cost += (
            uncached * prompt_price
            + usage.cached_tokens * cache_read_price
            + usage.cache_write_tokens * cache_write_price
        )
        if model.price_reasoning is not None:
            answer = max(usage.completion_tokens - usage.reasoning_tokens, 0)
            cost += answer * completion_price + usage.reasoning_tokens * model.price_reasoning
        else:
            cost += usage.completion_tokens * completion_price
    return cost, CostSource.CATALOG


def _units_cost(model: PricedModel, units: Any) -> Decimal:
    """Each unit besides tokens at its price; a unit the call has none of costs nothing
    whether or not it is priced (`needed_prices` has checked the others are)."""
    cost = ZERO
    for unit, price in UNIT_PRICES.items():
        amount = getattr(units, unit, 0)
        if amount:
            cost += amount * _price(getattr(model, price))
    return cost


def _price(price: Decimal | None) -> Decimal:
    assert price is not None  # checked by `missing_prices` first
    return price


# A count past what the log's columns hold is no count a provider could mean.
MAX_TOKENS_REPORTED = 2**31 - 1
# More than this for one call is no cost a provider could mean either: the log's
# money has 12 digits before the point, and no single call costs a thousand dollars.
MAX_COST_REPORTED = Decimal(1000)
_COUNTS = ("prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens")


def checked_usage(
    usage: Usage, *, prompt_tokens: int, completion_tokens: int, most_tokens: int
) -> tuple[Usage, str]:
    """What a provider reported, made safe to price and record, and what was wrong
    with it ("" when nothing was). A misbehaving upstream cannot corrupt the books:

    - a cost that is negative, not a number, or absurd is dropped, so the call is
      priced from the catalog;
    - a prompt or completion count that is negative, unreadable or absurd is replaced
      by the call's own estimate (`prompt_tokens`) or the most it could produce
      (`completion_tokens`, what was reserved); other counts by zero. Absurd is past
      `most_tokens`, the model's context: no call reads or writes more.
    """
    most = min(most_tokens, MAX_TOKENS_REPORTED)
    problems: list[str] = []
    fixed: dict[str, Any] = {}
    fallbacks = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
    for name in (*_COUNTS, "reasoning_tokens"):
        value = getattr(usage, name)
        if name in usage.unreadable or not 0 <= value <= most:
            shown = usage.unreadable.get(name, str(value))
            fixed[name] = fallbacks.get(name, 0)
            problems.append(f"{name} {shown} replaced by {fixed[name]}")
    cost = usage.reported_cost
    if "cost" in usage.unreadable or (
        cost is not None and not (cost.is_finite() and 0 <= cost <= MAX_COST_REPORTED)
    ):
        shown = usage.unreadable.get("cost", str(cost))
        fixed["reported_cost"] = None
        problems.append(f"cost {shown} ignored, priced from the catalog")
    if "usage" in usage.unreadable:
        fixed.update(fallbacks)
        problems.append(
            f"usage {usage.unreadable['usage']} that is not an object; counted "
            f"{prompt_tokens} prompt and {completion_tokens} completion tokens"
        )
    if not problems:
        return usage, ""
    checked = replace(usage, **fixed, unreadable={})
    return checked, "The provider reported " + "; ".join(problems) + "."


def estimate_cost(
    model: PricedModel,
    prompt_tokens: int,
    completion_tokens: int,
    *,
    kind: str = CallKind.CHAT,
    units: Any = None,
) -> Decimal:
    """An upper bound of a call's cost, for routing decisions and budget reservations.

    For a chat, every prompt token at the prompt price (cache reads would only be
    cheaper), every completion token at the dearer of the completion and reasoning
    prices; for embeddings, the input tokens at the prompt price; for every kind, the
    units measured from the request (`units`: images, seconds, characters) at their
    prices, and the per-request price. Cache writes, which some providers charge above
    the prompt price, happen only when the caller asks for prompt caching and are not
    counted. Zero for the offline model; raises `PriceMissing` when a price is unknown.
    """
    if model.is_offline:
        return ZERO
    missing = missing_prices(model, kind, units)
    if missing:
        raise PriceMissing(model, missing)
    with _exact():
        cost = _units_cost(model, units) + _listed_or(model.price_request, ZERO)
        if kind == CallKind.EMBEDDING:
            return cost + prompt_tokens * _price(model.price_prompt)
        if kind != CallKind.CHAT:
            return cost
        prompt_price, completion_price = _required_prices(model)
        output_price = max(completion_price, _listed_or(model.price_reasoning, completion_price))
        return cost + prompt_tokens * prompt_price + completion_tokens * output_price


def estimate_prompt_tokens(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None = None
) -> int:
    """About how many prompt tokens these messages (and tool definitions) make.

    Four characters a token, rounded up per message, plus the chat format's overhead
    per message and for the reply; each image part counts as a low-detail image. No
    tokenizer, so it is deterministic, instant and needs no download; it is an
    estimate for routing and reservations, never what a call is charged.
    """
    tokens = REPLY_PRIMING_TOKENS
    for message in messages:
        characters, images = _message_size(message)
        tokens += MESSAGE_OVERHEAD_TOKENS + _tokens(characters) + images * IMAGE_TOKENS
    if tools:
        tokens += _tokens(len(json.dumps(list(tools), sort_keys=True, default=str)))
    return tokens


def _required_prices(model: PricedModel) -> tuple[Decimal, Decimal]:
    prompt, completion = model.price_prompt, model.price_completion
    if prompt is None or completion is None:
        missing = [
            name
            for name, price in (("price_prompt", prompt), ("price_completion", completion))
            if price is None
        ]
        raise PriceMissing(model, missing)
    return prompt, completion


def _listed_or(price: Decimal | None, fallback: Decimal) -> Decimal:
    return fallback if price is None else price


@contextmanager
def _exact() -> Iterator[None]:
    with localcontext() as context:
        context.prec = _EXACT_DIGITS
        context.traps[Inexact] = True
        yield


def _tokens(characters: int) -> int:
    return math.ceil(characters / CHARS_PER_TOKEN)


def _message_size(message: Any) -> tuple[int, int]:
    """Characters of text in a chat message, and how many images it carries."""
    if not isinstance(message, Mapping):
        return len(str(message)), 0
    characters = len(str(message.get("role") or "")) + len(str(message.get("name") or ""))
    images = 0
    content = message.get("content")
    if isinstance(content, str):
        characters += len(content)
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, Mapping) and part.get("type") in {"image_url", "input_image"}:
                images += 1
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                characters += len(part["text"])
            else:
                characters += len(json.dumps(part, default=str))
    elif content is not None:
        characters += len(json.dumps(content, default=str))
    for call in message.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping):
            characters += len(str(function.get("name") or ""))
            characters += len(str(function.get("arguments") or ""))
        else:
            characters += len(json.dumps(call, default=str))
    if message.get("tool_call_id"):
        characters += len(str(message["tool_call_id"]))
    return characters, images
