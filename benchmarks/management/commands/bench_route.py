"""`bin/manage bench_route`: how long one routing decision takes with a warm cache.

The benchmark itself is `benchmarks.route`."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from benchmarks.route import RouteBenchmark


class Command(BaseCommand):
    help = "Benchmark route(): p50/p95/p99/max per call with N routes and a warm cache."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--routes", type=int, default=100, help="Routes to create (100).")
        parser.add_argument("--calls", type=int, default=10_000, help="Timed calls (10000).")
        parser.add_argument("--seed", type=int, default=0, help="Seed for the random calls.")

    def handle(self, *args: Any, **options: Any) -> None:
        RouteBenchmark(self.stdout).run(**options)
