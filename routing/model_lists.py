"""Reading a model list (OpenRouter's `/api/v1/models` and `/api/v1/embeddings/models`,
a saved copy, or the offline seed) into `CatalogEntry`s, the catalog's terms.

Prices arrive as strings of USD per unit and are parsed exactly as Decimal; "-1",
empty or absent means unknown (None), which flags the model instead of pricing it at
zero; a "0" for cached or reasoning tokens beside a non-zero base price means "no
separate price" (see SPECIAL_PRICES), so those tokens fall back to the base price,
never to free.

What a model does comes from its `architecture`: the output modality says its kind
(embeddings, transcription, speech, else chat), the input modalities which unit
prices apply. OpenRouter publishes `image` in USD per input image, which the catalog
stores as is, but a model's `audio` price is per audio *token* (there is no
per-second key, nor a per-video-second or per-character one), so those unit prices
stay unknown and the sync report says so: such a model is not routed to for a part
or a call it cannot be priced by, never priced at zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Context, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import httpx

from controlplane.money import DIGITS, PLACES, loads_exact, to_decimal
from routing.models import AIModel
from routing.models.catalog import KIND_PRICES, CallKind

# OpenRouter's pricing keys (USD per token unless named otherwise) and the catalog
# fields they fill. Others (web_search, image_output, audio per token, tiered
# "overrides") have no field and are ignored.
PRICE_KEYS = {
    "prompt": "price_prompt",
    "completion": "price_completion",
    "input_cache_read": "price_cache_read",
    "input_cache_write": "price_cache_write",
    "internal_reasoning": "price_reasoning",
    "request": "price_request",  # per request
    "image": "price_image",  # per input image
}
# The prices a list can give. The others (per second of audio or video, per character)
# no list publishes: a sync leaves what a person set in the admin as it is.
LISTED_PRICES = frozenset(PRICE_KEYS.values())
# Unit prices that apply only to a model taking that input: OpenRouter lists
# `"image": "0"` for text-only models, which is no price for an image it cannot read.
INPUT_PRICES = {"price_image": "image"}
# Inputs OpenRouter prices in a unit other than the catalog's, so the catalog's
# price stays unknown: input modality -> (catalog price, why).
UNPRICED_INPUTS = {
    "audio": ("price_audio_second", "audio is listed per token, not per second"),
    "video": ("price_video_second", "no per-second video price is listed"),
}
# Prices of a kind of token that default to a base price when not listed. OpenRouter
# writes "0" for "no separate price" (e.g. internal_reasoning "0" on models that bill
# reasoning as completion), so a zero here beside a non-zero base price is read as
# not listed: reasoning tokens are then charged at the completion price, never free.
SPECIAL_PRICES = {
    "price_cache_read": "price_prompt",
    "price_cache_write": "price_prompt",
    "price_reasoning": "price_completion",
}
# A model's kind from its output modalities, first match wins; a model with none of
# them (image or video generation, rerank) serves no call the gateway makes.
OUTPUT_KINDS = (
    ("embeddings", CallKind.EMBEDDING),
    ("transcription", CallKind.TRANSCRIPTION),
    ("speech", CallKind.SPEECH),
    ("text", CallKind.CHAT),
)
# Capabilities read from `supported_parameters`, named as the catalog names them.
CAPABILITY_PARAMETERS = {
    "tools": "tools",
    "reasoning": "reasoning",
    "structured_outputs": "structured_outputs",
}
MAX_INTEGER_DIGITS = DIGITS - PLACES
PRICE_QUANTUM = Decimal(1).scaleb(-PLACES)
FETCH_TIMEOUT_SECONDS = 30.0


class CatalogError(Exception):
    """The list could not be loaded or read; nothing was changed."""


@dataclass(frozen=True)
class CatalogEntry:
    """One model as a list describes it, in the catalog's terms. `kind` is "" for a
    model that serves no kind of call the gateway makes (it is not synced)."""

    model_id: str
    name: str
    context_length: int | None
    prices: Mapping[str, Decimal | None]  # AIModel price field -> USD per unit
    supports_tools: bool
    capabilities: tuple[str, ...]
    kind: str = CallKind.CHAT
    # Unit prices left unknown because the list gives them in another unit: price -> why.
    unpriced_units: Mapping[str, str] | None = None

    @property
    def missing_prices(self) -> list[str]:
        """The prices its kind is charged by that the list does not give."""
        return [name for name in KIND_PRICES[self.kind] if self.prices.get(name) is None]

    def values(self) -> dict[str, Any]:
        """The catalog fields this entry sets (`active` is the sync's to decide); the
        prices no list gives are not among them."""
        return {
            "name": self.name,
            "kind": self.kind,
            "context_length": self.context_length,
            **{name: self.prices.get(name) for name in sorted(LISTED_PRICES)},
            "supports_tools": self.supports_tools,
            "capabilities": list(self.capabilities),
        }


# Loading


def fetch_models(url: str, timeout: float = FETCH_TIMEOUT_SECONDS) -> Any:
    """GET OpenRouter's model list (or a compatible one) and parse it exactly."""
    try:
        response = httpx.get(
            url, timeout=timeout, follow_redirects=True, headers={"Accept": "application/json"}
        )
        response.raise_for_status()
    except httpx.HTTPStatusError as exc:
        raise CatalogError(
            f"Could not load the model list from {url}: HTTP {exc.response.status_code}."
        ) from exc
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        raise CatalogError(f"Could not load the model list from {url}: {reason}.") from exc
    return _decode(response.content, url)


def read_models(path: str | Path) -> Any:
    """A model list saved to a file (e.g. `curl .../api/v1/models > models.json`)."""
    try:
        content = Path(path).read_bytes()
    except OSError as exc:
        raise CatalogError(f"Could not read {path}: {exc.strerror or exc}.") from exc
    return _decode(content, str(path))


def _decode(content: bytes, origin: str) -> Any:
    try:
        return loads_exact(content)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise CatalogError(f"The model list from {origin} is not valid JSON: {exc}.") from exc


# Parsing


def parse_models(document: Any, *, kind: str | None = None) -> list[CatalogEntry]:
    """Every model of an OpenRouter list (`{"data": [...]}`), or CatalogError. `kind`:
    the list is of models of that kind (the embeddings list)."""
    rows = document.get("data") if isinstance(document, Mapping) else None
    if not isinstance(rows, list):
        raise CatalogError('The model list is not of the form {"data": [...]}.')
    if not rows:
        # An empty list would deactivate every model: far likelier a broken answer.
        raise CatalogError("The model list is empty; refusing to deactivate every model.")
    entries = [parse_model(row, position, kind=kind) for position, row in enumerate(rows)]
    seen: set[str] = set()
    for entry in entries:
        if entry.model_id in seen:
            raise CatalogError(f"Model {entry.model_id} is listed twice.")
        seen.add(entry.model_id)
    return entries


def parse_model(row: Any, position: int = 0, *, kind: str | None = None) -> CatalogEntry:
    """One model in OpenRouter's shape: id, name, context_length, pricing, parameters,
    architecture. `kind` overrides the one its output modalities say (a list of one
    kind, as the embeddings list)."""
    if not isinstance(row, Mapping):
        raise CatalogError(f"Model #{position + 1} of the list is not an object.")
    model_id = row.get("id")
    if not isinstance(model_id, str) or not model_id.strip():
        raise CatalogError(f"Model #{position + 1} of the list has no id.")
    model_id = model_id.strip()
    max_id = AIModel._meta.get_field("model_id").max_length or 0
    if len(model_id) > max_id:
        raise CatalogError(f"Model id {model_id[:40]}... is longer than {max_id} characters.")
    pricing = row.get("pricing") or {}
    if not isinstance(pricing, Mapping):
        raise CatalogError(f"Model {model_id}: pricing is not an object.")
    parameters = row.get("supported_parameters") or []
    if not isinstance(parameters, list):
        raise CatalogError(f"Model {model_id}: supported_parameters is not a list.")
    inputs, outputs = _modalities(row.get("architecture"), model_id)
    capabilities = {name for key, name in CAPABILITY_PARAMETERS.items() if key in parameters}
    if "image" in inputs:
        capabilities.add("vision")
    prices = _listed_prices(pricing, model_id)
    for price_field, modality in INPUT_PRICES.items():
        if modality not in inputs:
            prices[price_field] = None
    name = row.get("name")
    max_name = AIModel._meta.get_field("name").max_length or 0
    return CatalogEntry(
        model_id=model_id,
        name=(name if isinstance(name, str) else "")[:max_name],
        context_length=_context_length(row, model_id),
        prices=prices,
        supports_tools="tools" in parameters,
        capabilities=tuple(sorted(capabilities)),
        kind=kind if kind is not None else _kind(outputs),
        unpriced_units={
            price: why for modality, (price, why) in UNPRICED_INPUTS.items() if modality in inputs
        },
    )


def _modalities(architecture: Any, model_id: str) -> tuple[set[str], set[str] | None]:
    """Input modalities, and output modalities (None when the list does not say)."""
    if architecture is None:
        return set(), None
    if not isinstance(architecture, Mapping):
        raise CatalogError(f"Model {model_id}: architecture is not an object.")
    found: list[set[str] | None] = []
    for key in ("input_modalities", "output_modalities"):
        listed = architecture.get(key)
        if listed is not None and (
            not isinstance(listed, list) or not all(isinstance(m, str) for m in listed)
        ):
            raise CatalogError(f"Model {model_id}: architecture.{key} is not a list of names.")
        found.append(None if listed is None else set(listed))
    return found[0] or set(), found[1]


def _kind(outputs: set[str] | None) -> str:
    if outputs is None:
        return CallKind.CHAT  # a list that does not say is a list of chat models
    return next((kind for modality, kind in OUTPUT_KINDS if modality in outputs), "")


def parse_price(value: Any, *, model_id: str = "", key: str = "") -> Decimal | None:
    """USD per token, exactly; None when unknown ("-1", empty or absent)."""
    where = f"Model {model_id}: price {key!r}" if model_id else f"Price {key!r}"
    if isinstance(value, bool):
        raise CatalogError(f"{where} is not a number: {value!r}.")
    try:
        price = to_decimal(value.strip() if isinstance(value, str) else value)
    except (InvalidOperation, TypeError, ValueError) as exc:
        raise CatalogError(f"{where} is not a number: {value!r}.") from exc
    if price is None:
        return None
    if not price.is_finite():
        raise CatalogError(f"{where} is not a number: {value!r}.")
    if price < 0:
        return None  # OpenRouter's "-1": the price varies or is not known
    exponent = price.normalize().as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    if exponent < -PLACES or price.adjusted() >= MAX_INTEGER_DIGITS:
        # Storing it would round it: refuse rather than keep a price that is not the list's.
        raise CatalogError(f"{where} {value!r} does not fit the catalog's {PLACES} places.")
    # Written out to the places the database returns, so a price read back compares
    # (and audits) as the same text; exact, as it has no more places than that.
    return price.quantize(PRICE_QUANTUM, context=Context(prec=DIGITS))


def _listed_prices(pricing: Mapping[str, Any], model_id: str) -> dict[str, Decimal | None]:
    prices = {
        price_field: parse_price(pricing.get(key), model_id=model_id, key=key)
        for key, price_field in PRICE_KEYS.items()
    }
    for price_field, base_field in SPECIAL_PRICES.items():
        base = prices[base_field]
        if prices[price_field] == 0 and base is not None and base > 0:
            prices[price_field] = None
    return prices


def _context_length(row: Mapping[str, Any], model_id: str) -> int | None:
    value = row.get("context_length")
    if value is None and isinstance(row.get("top_provider"), Mapping):
        value = row["top_provider"].get("context_length")
    if value is None:
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        number = Decimal("NaN")
    if isinstance(value, bool) or not number.is_finite() or number != number.to_integral_value():
        raise CatalogError(f"Model {model_id}: context_length is not a whole number: {value!r}.")
    if number < 0 or number >= 2**31:
        raise CatalogError(f"Model {model_id}: context_length {value!r} is out of range.")
    return int(number)
