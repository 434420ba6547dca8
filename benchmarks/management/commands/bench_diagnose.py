"""`bin/manage bench_diagnose`: how long the diagnosis takes on a large queue.

The benchmark itself is `benchmarks.diagnose`."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from benchmarks.diagnose import DiagnoseBenchmark


class Command(BaseCommand):
    help = "Benchmark the diagnosis with N tasks and M workers (rolled back afterwards)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--tasks", type=int, default=100_000, help="Tasks (100000).")
        parser.add_argument("--workers", type=int, default=100, help="Workers (100).")
        parser.add_argument("--runs", type=int, default=7, help="Timed diagnoses (7).")
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args: Any, **options: Any) -> None:
        DiagnoseBenchmark(self.stdout).run(**options)
