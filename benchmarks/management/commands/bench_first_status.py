"""`bin/manage bench_first_status`: from pressing Run to the run's status in the browser.

The benchmark itself is `benchmarks.first_status`."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from benchmarks.first_status import FirstStatusBenchmark


class Command(BaseCommand):
    help = (
        "Benchmark the time from pressing Run to the run's first status in headless "
        "Chromium, against a live daphne: p50/p95 over --runs runs."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--runs", type=int, default=50)
        parser.add_argument("--warmup", type=int, default=5)

    def handle(self, *args: Any, **options: Any) -> None:
        FirstStatusBenchmark(self.stdout).run(**options)
