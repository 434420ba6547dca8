"""`bin/manage bench_route`: how long one routing decision takes with a warm cache.

Creates `--routes` routes (a primary and two fallbacks each, all priced) in the
configured database inside a transaction that is rolled back at the end, so nothing
is left behind; loads them into the routing table, then times `route()` for random
operations and prompt sizes. Target: p99 under 1 ms.
"""

from __future__ import annotations

import random
import secrets
import time
import uuid
from decimal import Decimal
from typing import Any

from django.core.cache import cache
from django.core.management.base import CommandError
from django.db import transaction

from benchmarks.harness import Benchmark, Latencies, describe_cache, describe_database
from controlplane.runtime.serving import freeze_startup_objects
from routing.models import AIModel, Budget, Policy, Provider, Route, RouteFallback
from routing.router import route
from routing.snapshots import VERSION_KEY

TARGET_P99_US = 1000.0
MODELS_PER_ROUTE = 3  # a primary and two fallbacks


class RouteBenchmark(Benchmark):
    """`bin/manage bench_route` (its arguments are parsed there), writing to `stdout`."""

    def run(self, **options: Any) -> None:
        routes, calls = options["routes"], options["calls"]
        if routes < 1 or calls < 1:
            raise CommandError("--routes and --calls must be at least 1.")
        # As the served process does (controlplane.asgi): no full garbage collection
        # walking Django's objects in the middle of a timed call.
        freeze_startup_objects()
        rng = random.Random(options["seed"])
        self.stdout.write(
            f"bench_route: {routes} routes (a primary and 2 fallbacks each, priced models), "
            f"{calls} timed calls, seed {options['seed']}"
        )
        self.stdout.write(f"Database: {describe_database()}")
        self.stdout.write(f"Cache: {describe_cache()}")
        try:
            with transaction.atomic():
                operations = create_routes(routes)
                _bump_routing_version()  # this process loads the new routes on its next call
                budgets = Budget.objects.filter(enabled=True).count()
                self.stdout.write(
                    f"Budgets: {budgets} enabled in the database (route() reads those that "
                    "apply on every call)"
                )
                samples, elapsed = _run(operations, calls, rng)
                transaction.set_rollback(True)
        finally:
            # The rolled-back routes must not outlive the benchmark in any process's table.
            _bump_routing_version()
        stats = Latencies.of(samples)
        self.stdout.write(
            f"route() per call: p50 {stats.p50:.1f} us  p95 {stats.p95:.1f} us  "
            f"p99 {stats.p99:.1f} us  max {stats.max:.1f} us  (mean {stats.mean:.1f} us)"
        )
        self.stdout.write(f"Throughput: {calls / elapsed:,.0f} calls/s ({calls} calls)")
        verdict = "met" if stats.p99 < TARGET_P99_US else "MISSED"
        self.stdout.write(f"Target p99 under 1 ms: {verdict} (p99 {stats.p99 / 1000:.3f} ms)")
        self.stdout.write(
            "Cleanup: the benchmark's rows were created in one transaction, rolled back; "
            "nothing is left behind."
        )


def _bump_routing_version() -> None:
    """Make every process reload its routing table on its next call. (The change
    signals' own invalidation runs on commit, which a rolled-back block never does.)"""
    cache.set(VERSION_KEY, uuid.uuid4().hex, None)


def create_routes(count: int) -> list[str]:
    """`count` routes on priced models of a provider of their own; their operations.

    Bulk inserts: the rows only live inside the benchmark's transaction.
    """
    tag = secrets.token_hex(3)
    provider = Provider.objects.create(
        name=f"bench-route-{tag}",
        kind=Provider.Kind.COMPATIBLE,
        base_url="http://127.0.0.1:9/v1",  # never called: route() only decides
    )
    models = AIModel.objects.bulk_create(
        [
            AIModel(
                provider=provider,
                model_id=f"bench/model-{index:04d}",
                context_length=128_000,
                price_prompt=Decimal("0.0000001") * (1 + index % 7),
                price_completion=Decimal("0.0000004") * (1 + index % 5),
                price_cache_read=Decimal("0.00000001"),
                supports_tools=True,
            )
            for index in range(count * MODELS_PER_ROUTE)
        ]
    )
    policies: list[Policy | None] = [None, *Policy.objects.order_by("mode")]
    routes = Route.objects.bulk_create(
        [
            Route(
                operation=f"bench.route-{tag}-{index:04d}",
                primary_model=models[index * MODELS_PER_ROUTE],
                policy=policies[index % len(policies)],
                # Every fourth route has a per-call approval threshold to check.
                approval_threshold=Decimal("0.01") if index % 4 == 0 else None,
            )
            for index in range(count)
        ]
    )
    RouteFallback.objects.bulk_create(
        [
            RouteFallback(
                route=row, model=models[index * MODELS_PER_ROUTE + position], position=position
            )
            for index, row in enumerate(routes)
            for position in range(1, MODELS_PER_ROUTE)
        ]
    )
    return [row.operation for row in routes]


def _run(operations: list[str], calls: int, rng: random.Random) -> tuple[list[float], float]:
    """Warm every route, then time `calls` decisions; microseconds each, and the
    wall-clock seconds of the timed loop."""
    for operation in operations:
        route(operation, estimated_tokens=500)
    plan = [(rng.choice(operations), rng.randint(20, 8_000)) for _ in range(calls)]
    samples: list[float] = []
    clock = time.perf_counter_ns
    began = time.perf_counter()
    for operation, tokens in plan:
        start = clock()
        route(operation, estimated_tokens=tokens)
        samples.append((clock() - start) / 1000)
    return samples, time.perf_counter() - began
