"""`bin/manage bench_grouping`: grouping accuracy on labelled LogHub samples and lines per
second on a mixed file, beside drain3.

The benchmark itself is `benchmarks.grouping`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from benchmarks.grouping import GroupingBenchmark

# The shared benchmark data sits beside the project's checkout.
DEFAULT_DATA = Path(settings.BASE_DIR).parent / "shared" / "benchmarks" / "loghub-2k"


class Command(BaseCommand):
    help = "Benchmark log grouping: GA per system and lines/s, with drain3 as the reference."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--data",
            default=str(DEFAULT_DATA),
            help="Folder of labelled systems (../shared/benchmarks/loghub-2k).",
        )
        parser.add_argument(
            "--mixed-lines", type=int, default=200_000, help="Lines in the mixed file (200000)."
        )
        parser.add_argument("--rounds", type=int, default=3, help="Timed rounds each (3).")
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args: Any, **options: Any) -> None:
        GroupingBenchmark(self.stdout).run(**options)
