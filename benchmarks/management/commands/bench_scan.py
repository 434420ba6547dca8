"""`bin/manage bench_scan`: a full code scan of this product's own repository and an
incremental one after a one-file change, with wall time and peak memory of each.

The benchmark itself is `benchmarks.scan`."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from benchmarks.scan import ScanBenchmark


class Command(BaseCommand):
    help = (
        "Benchmark code scans: a full scan of this repository (every check, registries "
        "served by local fakes), then an incremental one after a one-file change."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--source", default="", help="The git repository to clone (this checkout)."
        )
        parser.add_argument(
            "--change",
            default="",
            help="The file changed for the incremental scan (healthmon/code_scans.py).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        ScanBenchmark(self.stdout).run(**options)
