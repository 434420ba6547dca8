"""Keeping the model catalog in step with OpenRouter's public list, or the offline seed.

One parsing path for both: every model, from OpenRouter's `/api/v1/models` or from
`seed_catalog.json`, becomes a `CatalogEntry` through `parse_model`, and one function,
`sync_provider`, turns entries into inserts, updates and deactivations of a
provider's models and a `SyncReport` of what changed. Prices arrive as strings of
USD per token and are parsed exactly as Decimal; "-1", empty or absent means
unknown (None), which flags the model instead of pricing it at zero; a "0" for
cached or reasoning tokens beside a non-zero base price means "no separate price"
(see SPECIAL_PRICES), so those tokens fall back to the base price, never to free.

Models that disappear from the list are marked inactive, never deleted: routes and
the cost log refer to them. Every write is an `AuditedModel.save()`, so each change
is in the audit trail; the caller runs the whole sync in one transaction
(`sync_openrouter` and `sync_seed` do), so a failure leaves nothing half-written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Context, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import httpx
from django.db import transaction

from controlplane.money import DIGITS, PLACES, exact_text, loads_exact, to_decimal
from routing.models import AIModel, Provider

OPENROUTER = "openrouter"
OPENROUTER_BASE_URL = "https://openrouter.ai/api/v1"
SEED_PATH = Path(__file__).resolve().parent / "seed_catalog.json"

# OpenRouter's pricing keys and the catalog fields they fill. Others (image,
# web_search, audio, tiered "overrides") have no field and are ignored.
PRICE_KEYS = {
    "prompt": "price_prompt",
    "completion": "price_completion",
    "input_cache_read": "price_cache_read",
    "input_cache_write": "price_cache_write",
    "internal_reasoning": "price_reasoning",
    "request": "price_request",
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
# Capabilities read from `supported_parameters`, named as the catalog names them.
CAPABILITY_PARAMETERS = {
    "tools": "tools",
    "reasoning": "reasoning",
    "structured_outputs": "structured_outputs",
}
REQUIRED_PRICES = ("price_prompt", "price_completion")
MAX_INTEGER_DIGITS = DIGITS - PLACES
PRICE_QUANTUM = Decimal(1).scaleb(-PLACES)
FETCH_TIMEOUT_SECONDS = 30.0


class CatalogError(Exception):
    """The list could not be loaded or read; nothing was changed."""


@dataclass(frozen=True)
class CatalogEntry:
    """One model as a list describes it, in the catalog's terms."""

    model_id: str
    name: str
    context_length: int | None
    prices: Mapping[str, Decimal | None]  # AIModel price field -> USD per token
    supports_tools: bool
    capabilities: tuple[str, ...]

    @property
    def missing_prices(self) -> list[str]:
        return [name for name in REQUIRED_PRICES if self.prices.get(name) is None]

    def values(self) -> dict[str, Any]:
        """The catalog fields this entry sets (`active` is the sync's to decide)."""
        return {
            "name": self.name,
            "context_length": self.context_length,
            **{name: self.prices.get(name) for name in AIModel.PRICE_FIELDS},
            "supports_tools": self.supports_tools,
            "capabilities": list(self.capabilities),
        }


@dataclass(frozen=True)
class ProviderSpec:
    """The provider a list belongs to, and how to create it when it is missing."""

    name: str
    kind: str
    base_url: str
    enabled: bool = True


OPENROUTER_PROVIDER = ProviderSpec(OPENROUTER, Provider.Kind.OPENROUTER, OPENROUTER_BASE_URL)


@dataclass
class SyncReport:
    """What a sync changed (or, in a dry run, would change) for one provider."""

    provider: str
    dry_run: bool = False
    provider_created: bool = False
    added: list[str] = field(default_factory=list)
    # model id -> field -> (before, after)
    updated: dict[str, dict[str, tuple[Any, Any]]] = field(default_factory=dict)
    deactivated: list[str] = field(default_factory=list)
    unchanged: int = 0
    # model id -> the required prices it lacks; such a model is flagged, not free.
    price_missing: dict[str, list[str]] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.provider_created or self.added or self.updated or self.deactivated)

    def summary(self) -> str:
        counts = (
            f"{len(self.added)} added, {len(self.updated)} updated, "
            f"{len(self.deactivated)} deactivated, {self.unchanged} unchanged, "
            f"{len(self.price_missing)} flagged for a missing price"
        )
        return f"{self.provider}{' (dry run)' if self.dry_run else ''}: {counts}."

    def lines(self) -> list[str]:
        lines = [self.summary()]
        if self.provider_created:
            lines.append(f"  + provider {self.provider}")
        lines += [f"  + {model_id}" for model_id in self.added]
        for model_id, changes in self.updated.items():
            described = "; ".join(
                f"{name} {_shown(before)} -> {_shown(after)}"
                for name, (before, after) in changes.items()
            )
            lines.append(f"  ~ {model_id}: {described}")
        lines += [f"  - {model_id} (inactive)" for model_id in self.deactivated]
        for model_id, missing in self.price_missing.items():
            kinds = ", ".join(name.removeprefix("price_") for name in missing)
            lines.append(f"  ! {model_id}: no {kinds} price (flagged, never priced at zero)")
        return lines


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


def parse_models(document: Any) -> list[CatalogEntry]:
    """Every model of an OpenRouter list (`{"data": [...]}`), or CatalogError."""
    rows = document.get("data") if isinstance(document, Mapping) else None
    if not isinstance(rows, list):
        raise CatalogError('The model list is not of the form {"data": [...]}.')
    if not rows:
        # An empty list would deactivate every model: far likelier a broken answer.
        raise CatalogError("The model list is empty; refusing to deactivate every model.")
    entries = [parse_model(row, position) for position, row in enumerate(rows)]
    seen: set[str] = set()
    for entry in entries:
        if entry.model_id in seen:
            raise CatalogError(f"Model {entry.model_id} is listed twice.")
        seen.add(entry.model_id)
    return entries


def parse_model(row: Any, position: int = 0) -> CatalogEntry:
    """One model in OpenRouter's shape: id, name, context_length, pricing, parameters."""
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
    capabilities = {name for key, name in CAPABILITY_PARAMETERS.items() if key in parameters}
    architecture = row.get("architecture")
    if isinstance(architecture, Mapping) and "image" in (
        architecture.get("input_modalities") or []
    ):
        capabilities.add("vision")
    name = row.get("name")
    max_name = AIModel._meta.get_field("name").max_length or 0
    return CatalogEntry(
        model_id=model_id,
        name=(name if isinstance(name, str) else "")[:max_name],
        context_length=_context_length(row, model_id),
        prices=_listed_prices(pricing, model_id),
        supports_tools="tools" in parameters,
        capabilities=tuple(sorted(capabilities)),
    )


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


def seed_catalog(path: Path = SEED_PATH) -> list[tuple[ProviderSpec, list[CatalogEntry]]]:
    """The offline seed: its providers, each with its models parsed like OpenRouter's."""
    document = read_models(path)
    try:
        providers = {
            row["name"]: ProviderSpec(
                row["name"], row["kind"], row.get("base_url", ""), row.get("enabled", True)
            )
            for row in document["providers"]
        }
        grouped: dict[str, list[CatalogEntry]] = {name: [] for name in providers}
        for position, row in enumerate(document["models"]):
            # The seed's own shape, restated as OpenRouter's for the one parser.
            as_listed = {
                "id": row["model_id"],
                "name": row.get("name", ""),
                "context_length": row.get("context_length"),
                "pricing": row.get("prices", {}),
                "supported_parameters": ["tools"] if row.get("supports_tools") else [],
            }
            grouped[row["provider"]].append(parse_model(as_listed, position))
    except (KeyError, TypeError) as exc:
        raise CatalogError(f"The seed catalog {path} is malformed: missing {exc}.") from exc
    return [(providers[name], entries) for name, entries in grouped.items()]


# Syncing


def sync_openrouter(document: Any, *, dry_run: bool = False) -> SyncReport:
    """Bring the `openrouter` provider's models in line with an OpenRouter list."""
    entries = parse_models(document)
    with transaction.atomic():
        return sync_provider(
            OPENROUTER_PROVIDER, entries, source=AIModel.Source.OPENROUTER, dry_run=dry_run
        )


def sync_seed(path: Path = SEED_PATH, *, dry_run: bool = False) -> list[SyncReport]:
    """Load the offline seed: add its models and restore their seed values.

    The seed lists a few models, not a provider's whole range: it deactivates none
    that it leaves out and reactivates none that a sync or a person switched off.
    """
    catalog = seed_catalog(path)
    with transaction.atomic():
        return [
            sync_provider(
                spec,
                entries,
                source=AIModel.Source.SEED,
                whole_range=False,
                dry_run=dry_run,
            )
            for spec, entries in catalog
        ]


def sync_provider(
    spec: ProviderSpec,
    entries: list[CatalogEntry],
    *,
    source: str,
    whole_range: bool = True,
    dry_run: bool = False,
) -> SyncReport:
    """Insert, update and deactivate the provider's models to match `entries`.

    `whole_range`: the entries are every model the provider offers, so a model in
    them is active and one missing from them is deactivated. Call it inside a
    transaction. A model is saved only when something changed, and its `source`
    then records where its values came from.
    """
    report = SyncReport(spec.name, dry_run=dry_run)
    provider = Provider.objects.filter(name=spec.name).first()
    if provider is None:
        report.provider_created = True
        if not dry_run:
            provider = Provider.objects.create(
                name=spec.name, kind=spec.kind, base_url=spec.base_url, enabled=spec.enabled
            )
    existing: dict[str, AIModel] = {}
    if provider is not None:
        stored = AIModel.objects.filter(provider=provider)
        if not dry_run:
            stored = stored.select_for_update()
        existing = {model.model_id: model for model in stored}

    for entry in entries:
        values = entry.values()
        if whole_range:
            values["active"] = True
        model = existing.get(entry.model_id)
        if model is None:
            report.added.append(entry.model_id)
            if not dry_run:
                assert provider is not None
                AIModel.objects.create(
                    provider=provider, model_id=entry.model_id, source=source, **values
                )
            continue
        changes = {
            name: (getattr(model, name), value)
            for name, value in values.items()
            if getattr(model, name) != value
        }
        if not changes:
            report.unchanged += 1
            continue
        report.updated[entry.model_id] = changes
        if not dry_run:
            for name, (_, value) in changes.items():
                setattr(model, name, value)
            model.source = source
            model.save()

    if whole_range:
        listed = {entry.model_id for entry in entries}
        for model_id in sorted(set(existing) - listed):
            model = existing[model_id]
            if not model.active:
                continue
            report.deactivated.append(model_id)
            if not dry_run:
                model.active = False
                model.save()

    if (provider.kind if provider is not None else spec.kind) != Provider.Kind.OFFLINE:
        report.price_missing = {
            entry.model_id: entry.missing_prices for entry in entries if entry.missing_prices
        }
    return report


def _shown(value: Any) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, Decimal):
        return exact_text(value)
    if isinstance(value, list):
        return "[" + ", ".join(str(item) for item in value) + "]"
    return str(value)
