"""`bin/manage bench_gateway`: what the gateway adds to an AI call's latency.

The benchmark itself is `benchmarks.gateway`."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from benchmarks.gateway import GatewayBenchmark
from benchmarks.gateway_endpoints import ENDPOINTS
from benchmarks.harness import APPLICATION


class Command(BaseCommand):
    help = (
        "Benchmark the gateway: the same requests to a local upstream directly and "
        "through /v1/chat/completions (and --endpoint's); added latency and requests/s per "
        "concurrency level."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--requests", type=int, default=2000, help="Timed requests each way, per level."
        )
        parser.add_argument(
            "--concurrency", default="1,10", help="Comma-separated levels (default 1,10)."
        )
        parser.add_argument(
            "--warmup", type=int, default=50, help="Untimed requests each way before each level."
        )
        parser.add_argument(
            "--endpoint",
            choices=sorted(ENDPOINTS),
            default="chat",
            help="Measure this endpoint too, beside chat, in the same run (default chat only).",
        )
        parser.add_argument(
            "--as-large",
            action="store_true",
            help="Also measure chat with a request as large as --endpoint's, and compare "
            "the endpoint with it too.",
        )
        parser.add_argument(
            "--control",
            action="store_true",
            help="Also measure chat a second time, in the same turns, and compare it with "
            "chat as --endpoint is: what the comparison reads when nothing differs.",
        )
        parser.add_argument(
            "--application",
            default=APPLICATION,
            help=f"The ASGI application daphne serves (default {APPLICATION}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        GatewayBenchmark(self.stdout).run(**options)
