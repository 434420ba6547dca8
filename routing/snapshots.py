"""Plain, cacheable views of the routing configuration.

`route()` runs on every AI call, so it reads these frozen snapshots from memory
instead of the database. The whole table of routes is loaded at once, kept for at
most `ROUTE_CACHE_SECONDS` (5 minutes), and dropped at once in every process when a
route, policy, model, provider, budget or service key changes: a change bumps a
version number in the shared cache, which each process compares on every call. So
a gateway call finds its service key, route, budgets and provider without a query,
and a revoked key is refused by every process from the next call on.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from controlplane import api_tokens
from routing.models import AIModel, Budget, Policy, Provider, Route, ServiceKey
from routing.models.gateway import KEY_PREFIX

VERSION_KEY = "routing:config-version"


@dataclass(frozen=True)
class ModelChoice:
    pk: int
    model_id: str
    provider_id: int
    provider_name: str
    provider_kind: str
    kind: str  # the calls it serves (`CallKind`)
    context_length: int | None
    supports_tools: bool
    price_missing: bool
    price_per_1k: Decimal | None
    active: bool
    # Prices per token, as in the catalog (None: unknown), for estimates.
    price_prompt: Decimal | None
    price_completion: Decimal | None
    price_cache_read: Decimal | None
    price_cache_write: Decimal | None
    price_reasoning: Decimal | None
    price_request: Decimal | None
    price_image: Decimal | None
    price_audio_second: Decimal | None
    price_video_second: Decimal | None
    price_character: Decimal | None

    @classmethod
    def of(cls, model: AIModel) -> ModelChoice:
        return cls(
            pk=model.pk,
            model_id=model.model_id,
            provider_id=model.provider_id,
            provider_name=model.provider.name,
            provider_kind=model.provider.kind,
            kind=model.kind,
            context_length=model.context_length,
            supports_tools=model.supports_tools,
            price_missing=model.price_missing,
            price_per_1k=model.price_per_1k(),
            active=model.active and model.provider.enabled,
            **{name: getattr(model, name) for name in AIModel.PRICE_FIELDS},
        )

    @property
    def is_offline(self) -> bool:
        return self.provider_kind == "offline"

    @property
    def label(self) -> str:
        return f"{self.model_id} via {self.provider_name}"


@dataclass(frozen=True)
class PolicySnapshot:
    mode: str
    preferred_provider_id: int | None
    preferred_model_id: int | None
    max_price_per_1k: Decimal | None
    max_context: int | None
    max_iterations: int
    max_cost_per_run: Decimal | None
    max_wall_clock_seconds: int

    @classmethod
    def of(cls, policy: Policy) -> PolicySnapshot:
        return cls(
            mode=policy.mode,
            preferred_provider_id=policy.preferred_provider_id,
            preferred_model_id=policy.preferred_model_id,
            max_price_per_1k=policy.max_price_per_1k,
            max_context=policy.max_context,
            max_iterations=policy.max_iterations,
            max_cost_per_run=policy.max_cost_per_run,
            max_wall_clock_seconds=policy.max_wall_clock_seconds,
        )


@dataclass(frozen=True)
class RouteSnapshot:
    operation: str
    route_id: int
    primary: ModelChoice
    fallbacks: tuple[ModelChoice, ...]
    policy_mode: str | None
    spends_money: bool
    irreversible: bool
    approval_threshold: Decimal | None
    ab_model: ModelChoice | None
    ab_percent: int
    api: str = "chat_completions"  # what its calls speak upstream (`UpstreamApi`)


@dataclass(frozen=True)
class KeySnapshot:
    pk: int
    key_hash: str
    service: str
    default_operation: str
    last_used_at: datetime | None

    @classmethod
    def of(cls, key: ServiceKey) -> KeySnapshot:
        return cls(key.pk, key.key_hash, key.service, key.default_operation, key.last_used_at)


@dataclass(frozen=True)
class RoutingTable:
    routes: dict[str, RouteSnapshot]
    policies: dict[str, PolicySnapshot]
    version: str
    loaded_at: float
    # The enabled budgets: which apply to a call is decided without a query.
    budgets: tuple[Budget, ...] = ()
    # Catalog providers by id (for their clients), service keys not revoked by lookup.
    providers: dict[int, Provider] = field(default_factory=dict)
    service_keys: dict[str, KeySnapshot] = field(default_factory=dict)

    def service_key(self, raw: str) -> KeySnapshot | None:
        """The key `raw` is the secret of, when it is one and is not revoked."""
        lookup = api_tokens.lookup_of(raw, KEY_PREFIX)
        key = self.service_keys.get(lookup) if lookup is not None else None
        if key is None or not api_tokens.matches(key.key_hash, raw):
            return None
        return key


def load_table(version: str) -> RoutingTable:
    routes = Route.objects.select_related(
        "primary_model__provider", "ab_model__provider", "policy"
    ).prefetch_related("fallback_links__model__provider")
    snapshots = {}
    for route in routes:
        snapshots[route.operation] = RouteSnapshot(
            operation=route.operation,
            route_id=route.pk,
            primary=ModelChoice.of(route.primary_model),
            fallbacks=tuple(
                ModelChoice.of(link.model)
                for link in sorted(route.fallback_links.all(), key=lambda link: link.position)
            ),
            policy_mode=route.policy.mode if route.policy else None,
            spends_money=route.spends_money,
            irreversible=route.irreversible,
            approval_threshold=route.approval_threshold,
            ab_model=ModelChoice.of(route.ab_model) if route.ab_model else None,
            ab_percent=route.ab_percent,
            api=route.api,
        )
    policies = {policy.mode: PolicySnapshot.of(policy) for policy in Policy.objects.all()}
    budgets = tuple(Budget.objects.filter(enabled=True).order_by("pk"))
    keys = ServiceKey.objects.filter(revoked_at__isnull=True)
    return RoutingTable(
        snapshots,
        policies,
        version,
        time.monotonic(),
        budgets,
        providers={provider.pk: provider for provider in Provider.objects.all()},
        service_keys={key.lookup: KeySnapshot.of(key) for key in keys},
    )


_table: RoutingTable | None = None
_lock = threading.Lock()


def current_version() -> str:
    version = cache.get(VERSION_KEY)
    if version is None:
        version = uuid.uuid4().hex
        if not cache.add(VERSION_KEY, version, None):
            version = cache.get(VERSION_KEY) or version
    return version


def routing_table() -> RoutingTable:
    """The routes and policies, from memory while still current."""
    global _table
    version = current_version()
    table = _table
    if (
        table is None
        or table.version != version
        or time.monotonic() - table.loaded_at > settings.ROUTE_CACHE_SECONDS
    ):
        with _lock:
            table = load_table(version)
            _table = table
    return table


@dataclass(frozen=True)
class Reading:
    """The routing table, and what else a call needs from the cache (its switches, its
    models' cooldowns), read together: `values` holds each of the `asked` keys the
    cache had."""

    table: RoutingTable
    asked: frozenset[str]
    values: dict[str, Any]

    def has(self, keys: Iterable[str]) -> bool:
        """Whether every one of `keys` was read (found or not)."""
        return self.asked.issuperset(keys)


def read(keys: Callable[[RoutingTable], Iterable[str]]) -> Reading:
    """The routing table and the cache's `keys(table)`: while the table in memory is
    current, in the one round trip that checks its version."""
    table = _table
    if table is not None and time.monotonic() - table.loaded_at <= settings.ROUTE_CACHE_SECONDS:
        wanted = frozenset(keys(table))
        values = cache.get_many([VERSION_KEY, *wanted])
        if values.pop(VERSION_KEY, None) == table.version:
            return Reading(table, wanted, values)
    table = routing_table()  # changed (or not loaded yet): reloaded, then read again
    wanted = frozenset(keys(table))
    return Reading(table, wanted, cache.get_many(list(wanted)))


def invalidate(**kwargs: object) -> None:
    """Signal receiver: once the change commits, every process reloads its table."""
    transaction.on_commit(lambda: cache.set(VERSION_KEY, uuid.uuid4().hex, None))
