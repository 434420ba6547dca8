"""`bin/manage bench_events`: a run's event stream under load, end to end.

The benchmark itself is `benchmarks.events`."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from benchmarks.events import LAYERS, PRODUCERS, TARGET_RATE, EventsBenchmark


class Command(BaseCommand):
    help = (
        "Benchmark the run event stream: one run emitting many events to websocket "
        "clients through daphne, with the in-memory and the Redis channel layer."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--events", type=int, default=20_000)
        parser.add_argument("--clients", type=int, default=10)
        parser.add_argument(
            "--rate",
            type=float,
            default=TARGET_RATE,
            help="Events a second the run emits (0: as fast as it can; default 1000).",
        )
        parser.add_argument(
            "--layer",
            nargs="+",
            choices=LAYERS,
            default=["memory", "redis"],
            help="memory, redis (the layer settings.py configures with REDIS_URL: "
            "channels_redis' pub/sub layer) and/or redis-core (channels_redis' "
            "RedisChannelLayer); default memory redis.",
        )
        parser.add_argument(
            "--producer",
            choices=PRODUCERS,
            default="writer",
            help="writer: an EventWriter (group commit; default); emit: one emit() "
            "(one transaction) per event.",
        )
        parser.add_argument(
            "--redis-url",
            default=settings.REDIS_URL or "redis://127.0.0.1:6379/0",
            help="Redis for the redis layer (default REDIS_URL, else redis://127.0.0.1:6379/0).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        EventsBenchmark(self.stdout).run(**options)
