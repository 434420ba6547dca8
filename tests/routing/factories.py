"""Catalog rows for routing tests: a provider pointing at a local `OpenAIServer`,
models with prices, routes with fallbacks, budgets.

    with OpenAIServer() as server:
        local = provider(server)
        cheap = model(local, "test/cheap", prompt="0.000001", completion="0.000002")
        dear = model(local, "test/dear", prompt="0.00001", completion="0.00002")
        route("summarize-logs", cheap, dear)           # dear is the first fallback
        budget("5")                                    # the global budget, $5 a day

`route()` reads a cached table that a change drops *on commit*. A test runs in a
transaction that never commits, so create the catalog before the test's first
`route()` (each test starts with an empty cache, hence a fresh table), or make the
change under `django_capture_on_commit_callbacks(execute=True)` as production would.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from routing.models import AIModel, Budget, Policy, Provider, Route, RouteFallback
from tests.routing.openai_server import OpenAIServer

LOCAL_API_KEY = "sk-local-test-key"


def provider(
    server: OpenAIServer | None = None,
    *,
    name: str = "local",
    kind: str = Provider.Kind.COMPATIBLE,
    **fields: Any,
) -> Provider:
    """A provider that sends its calls to `server` (no server: no base URL)."""
    fields.setdefault("timeout_seconds", 5)
    return Provider.objects.create(
        name=name,
        kind=kind,
        base_url=server.url if server is not None else "",
        api_key=LOCAL_API_KEY if server is not None else "",
        **fields,
    )


def model(
    on: Provider,
    model_id: str,
    *,
    prompt: str | None = "0.000001",
    completion: str | None = "0.000002",
    context_length: int | None = 1_000_000,
    **fields: Any,
) -> AIModel:
    """A catalog model; prices are USD per token as text (None: the price is missing)."""
    for name in ("cache_read", "cache_write", "reasoning", "request"):
        if f"price_{name}" in fields and fields[f"price_{name}"] is not None:
            fields[f"price_{name}"] = Decimal(fields[f"price_{name}"])
    return AIModel.objects.create(
        provider=on,
        model_id=model_id,
        price_prompt=None if prompt is None else Decimal(prompt),
        price_completion=None if completion is None else Decimal(completion),
        context_length=context_length,
        supports_tools=True,
        **fields,
    )


def route(
    operation: str,
    primary: AIModel,
    *fallbacks: AIModel,
    policy: Policy | str | None = None,
    **fields: Any,
) -> Route:
    """A route to `primary`, then `fallbacks` in order. `policy` is a Policy or a mode."""
    if isinstance(policy, str):
        policy = Policy.objects.get(mode=policy)
    if isinstance(fields.get("approval_threshold"), str):
        fields["approval_threshold"] = Decimal(fields["approval_threshold"])
    made = Route.objects.create(operation=operation, primary_model=primary, policy=policy, **fields)
    for position, fallback in enumerate(fallbacks):
        RouteFallback.objects.create(route=made, model=fallback, position=position)
    return made


def budget(limit: str, scope: str = Budget.Scope.GLOBAL, **target: Any) -> Budget:
    """A daily budget of `limit` USD; `target` is user=, operation= or service=."""
    return Budget.objects.create(scope=scope, daily_limit=Decimal(limit), **target)
