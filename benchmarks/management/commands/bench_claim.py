"""`bin/manage bench_claim [--tasks 2000] [--workers 8]`: claim throughput.

The benchmark itself is `benchmarks.claim`."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from benchmarks.claim import ClaimBenchmark


class Command(BaseCommand):
    help = (
        "Benchmark claiming: tasks claimed and completed per second by concurrent workers, "
        "through the worker HTTP API (daphne) and through the model layer."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--tasks", type=int, default=2000, help="Tasks each way (2000).")
        parser.add_argument("--workers", type=int, default=8, help="Concurrent workers (8).")

    def handle(self, *args: Any, **options: Any) -> None:
        ClaimBenchmark(self.stdout).run(**options)
