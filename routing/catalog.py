"""Keeping the model catalog in step with OpenRouter's public list, or the offline seed.

One parsing path for all: every model, from OpenRouter's `/api/v1/models` and
`/api/v1/embeddings/models` or from `seed_catalog.json`, becomes a `CatalogEntry`
through `routing.model_lists.parse_model` (prices, kind and unit prices are read
there), and one function, `sync_provider`, turns entries into inserts, updates and
deactivations of a provider's models and a `SyncReport` of what changed.

Models that disappear from the list are marked inactive, never deleted: routes and
the cost log refer to them. Every write is an `AuditedModel.save()`, so each change
is in the audit trail; the caller runs the whole sync in one transaction
(`sync_openrouter` and `sync_seed` do), so a failure leaves nothing half-written.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.db import transaction

from controlplane.money import exact_text
from routing.model_lists import (
    FETCH_TIMEOUT_SECONDS,
    LISTED_PRICES,
    CatalogEntry,
    CatalogError,
    fetch_models,
    parse_model,
    parse_models,
    parse_price,
    read_models,
)
from routing.models import AIModel, Provider
from routing.models.catalog import CallKind

__all__ = [
    "FETCH_TIMEOUT_SECONDS",
    "CatalogEntry",
    "CatalogError",
    "EmbeddingList",
    "SyncReport",
    "fetch_models",
    "parse_price",
    "read_models",
    "sync_openrouter",
    "sync_seed",
]

OPENROUTER = "openrouter"
OPENROUTER_BASE_URL = "https://openrouter.ai/api/v1"
SEED_PATH = Path(__file__).resolve().parent / "seed_catalog.json"


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
    # model id -> the prices its kind needs that it lacks; flagged, never free.
    price_missing: dict[str, list[str]] = field(default_factory=dict)
    # model id -> {unit price: why unknown}: parts of that unit are not routed to it.
    unpriced_units: dict[str, dict[str, str]] = field(default_factory=dict)
    # Models the list has that serve no kind of call the gateway makes (not synced).
    skipped: list[str] = field(default_factory=list)
    # Why the embeddings list was not read (its models were then left as they were).
    embeddings_unread: str = ""

    @property
    def changed(self) -> bool:
        return bool(self.provider_created or self.added or self.updated or self.deactivated)

    def summary(self) -> str:
        counts = (
            f"{len(self.added)} added, {len(self.updated)} updated, "
            f"{len(self.deactivated)} deactivated, {self.unchanged} unchanged, "
            f"{len(self.price_missing)} flagged for a missing price"
        )
        if self.skipped:
            counts += f", {len(self.skipped)} skipped (no kind of call the gateway makes)"
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
        for model_id, units in self.unpriced_units.items():
            described = "; ".join(
                f"{price.removeprefix('price_').replace('_', ' ')} unknown ({why})"
                for price, why in units.items()
            )
            lines.append(f"  ! {model_id}: {described}; such parts are not routed to it")
        if self.embeddings_unread:
            lines.append(
                f"  ! embeddings list not read ({self.embeddings_unread}); "
                "embedding models left as they were"
            )
        return lines


def _embedding_entries(embeddings: EmbeddingList | None) -> tuple[list[CatalogEntry], str]:
    """The embeddings list's models, and why it was not read ("" when it was). A list
    that failed to load or parse, or came back empty, is not read: its models are then
    kept as they are, neither updated nor deactivated."""
    if embeddings is None:
        return [], ""
    if embeddings.document is None:
        return [], embeddings.unread or "not loaded"
    try:
        return parse_models(embeddings.document, kind=CallKind.EMBEDDING), ""
    except CatalogError as exc:
        return [], str(exc)


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
                "architecture": row.get("architecture"),
            }
            grouped[row["provider"]].append(parse_model(as_listed, position))
    except (KeyError, TypeError) as exc:
        raise CatalogError(f"The seed catalog {path} is malformed: missing {exc}.") from exc
    return [(providers[name], entries) for name, entries in grouped.items()]


# Syncing


@dataclass(frozen=True)
class EmbeddingList:
    """OpenRouter's embeddings list (`/api/v1/embeddings/models`), apart from the main
    one; `document` None when it could not be loaded (`unread` says why)."""

    document: Any = None
    unread: str = ""


def sync_openrouter(
    document: Any, *, embeddings: EmbeddingList | None = None, dry_run: bool = False
) -> SyncReport:
    """Bring the `openrouter` provider's models in line with an OpenRouter list, and
    its embeddings list when given. Without a readable embeddings list, embedding
    models the main list leaves out are kept as they are rather than deactivated (the
    main list leaves embedding models out unless asked for every modality)."""
    entries = parse_models(document)
    extra, unread = _embedding_entries(embeddings)
    listed = {entry.model_id for entry in entries}
    entries += [entry for entry in extra if entry.model_id not in listed]
    served = [entry for entry in entries if entry.kind]
    with transaction.atomic():
        report = sync_provider(
            OPENROUTER_PROVIDER,
            served,
            source=AIModel.Source.OPENROUTER,
            dry_run=dry_run,
            unlisted_kept=() if embeddings is not None and not unread else (CallKind.EMBEDDING,),
        )
    report.skipped = [entry.model_id for entry in entries if not entry.kind]
    report.embeddings_unread = unread
    return report


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
    unlisted_kept: Collection[str] = (),
) -> SyncReport:
    """Insert, update and deactivate the provider's models to match `entries`.

    `whole_range`: the entries are every model the provider offers, so a model in
    them is active and one missing from them is deactivated, unless it is of a kind
    in `unlisted_kept` (a list not read this time). Call it inside a
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
            if not model.active or model.kind in unlisted_kept:
                continue
            report.deactivated.append(model_id)
            if not dry_run:
                model.active = False
                model.save()

    if (provider.kind if provider is not None else spec.kind) != Provider.Kind.OFFLINE:
        for entry in entries:
            known = existing.get(entry.model_id)
            if missing := [p for p in entry.missing_prices if _unknown(p, known)]:
                report.price_missing[entry.model_id] = missing
            unpriced = (entry.unpriced_units or {}).items()
            if units := {p: why for p, why in unpriced if _unknown(p, known)}:
                report.unpriced_units[entry.model_id] = units
    return report


def _unknown(price: str, stored: AIModel | None) -> bool:
    """Whether a price the list does not give is unknown in the catalog too: one no
    list publishes may have been set by a person, and then it is known."""
    return price in LISTED_PRICES or stored is None or getattr(stored, price) is None


def _shown(value: Any) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, Decimal):
        return exact_text(value)
    if isinstance(value, list):
        return "[" + ", ".join(str(item) for item in value) + "]"
    return str(value)
