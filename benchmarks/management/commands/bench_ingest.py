"""`bin/manage bench_ingest`: records a second one daphne process takes in over
OTLP/HTTP, latency, memory, and records lost.

The benchmark itself is `benchmarks.ingest`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from benchmarks.ingest import IngestBenchmark

# The shared benchmark data sits beside the project's checkout.
DEFAULT_DATA = Path(settings.BASE_DIR).parent / "shared" / "benchmarks" / "loghub-2k"


class Command(BaseCommand):
    help = (
        "Benchmark log ingest: OTLP/HTTP JSON batches into one daphne process; "
        "records/s, latency, memory and records lost."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--seconds", type=float, default=60, help="Timed seconds (60).")
        parser.add_argument("--batch", type=int, default=500, help="Records a request (500).")
        parser.add_argument("--concurrency", type=int, default=4, help="Clients at once (4).")
        parser.add_argument(
            "--data",
            default=str(DEFAULT_DATA),
            help="Folder of labelled LogHub samples, one folder per system.",
        )
        parser.add_argument("--seed", type=int, default=0, help="Shuffle of the lines (0).")
        parser.add_argument(
            "--migrate",
            action="store_true",
            help="Apply the migrations first (a database made for the benchmark).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        IngestBenchmark(self.stdout).run(**options)
