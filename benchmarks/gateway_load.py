"""The load `bin/manage bench_gateway` sends (`benchmarks.gateway`): requests direct
to the upstream and through the gateway, in short turns, their latencies and the
gateway process's CPU; and how far apart two endpoints' figures could be by a run's
own scatter."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

import httpx

from benchmarks.gateway_endpoints import Endpoint
from benchmarks.harness import DaphneProcess, Latencies
from routing.insights import percentile


@dataclass
class Load:
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    failures: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    cpu_seconds: float | None = None  # used by the serving process, where known

    def add(self, other: Load) -> None:
        """Count `other`'s requests, time and CPU in with these."""
        self.latencies += other.latencies
        self.failures += other.failures
        self.elapsed += other.elapsed
        if other.cpu_seconds is not None:
            self.cpu_seconds = (self.cpu_seconds or 0.0) + other.cpu_seconds

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def stats(self) -> Latencies | None:
        return Latencies.of(self.latencies) if self.latencies else None


@dataclass
class LevelResult:
    endpoint: str
    level: int
    requests: int
    warmup: int
    direct: Load
    gateway: Load
    # What failed among the warm-up requests (either way): not counted, but said.
    warmup_failures: list[str] = field(default_factory=list)

    def added_p95(self) -> float | None:
        """The gateway's p95 minus the direct p95, in seconds."""
        direct, gateway = self.direct.stats(), self.gateway.stats()
        if direct is None or gateway is None:
            return None
        return gateway.p95 - direct.p95


def measure(
    endpoints: list[Endpoint],
    level: int,
    requests: int,
    warmup: int,
    upstream_url: str,
    gateway_url: str,
    raw_key: str,
    gateway_process: DaphneProcess,
) -> list[LevelResult]:
    """Each endpoint's requests, direct and through the gateway, in turns: a block
    each way and endpoint at a time."""
    limits = httpx.Limits(max_connections=level, max_keepalive_connections=level)
    ways = [_Way(endpoint, upstream_url, gateway_url, raw_key) for endpoint in endpoints]
    with (
        httpx.Client(limits=limits, timeout=30) as to_upstream,
        httpx.Client(limits=limits, timeout=30) as to_gateway,
    ):
        for way in ways:
            for client, url, headers in (
                (to_upstream, way.direct_url, way.plain),
                (to_gateway, way.through_url, way.keyed),
            ):
                way.warmup_failures += _send(client, url, headers, way.body, warmup, level).failures
        # In turns, a block each way and endpoint at a time: a machine that slows down
        # or speeds up during the run (other processes on it) does so for every side,
        # not for one only; so chat and the endpoint compared with it see the same
        # machine. The endpoints take turns going first, so neither always follows the
        # other's bookkeeping.
        for turn, block in enumerate(_blocks(requests)):
            for way in ways[turn % len(ways) :] + ways[: turn % len(ways)]:
                way.direct.add(
                    _send(to_upstream, way.direct_url, way.plain, way.body, block, level)
                )
                cpu_before = gateway_process.cpu_seconds()
                through = _send(to_gateway, way.through_url, way.keyed, way.body, block, level)
                cpu_after = gateway_process.cpu_seconds()
                if cpu_before is not None and cpu_after is not None:
                    through.cpu_seconds = cpu_after - cpu_before
                way.gateway.add(through)
    return [
        LevelResult(
            way.endpoint.name, level, requests, warmup, way.direct, way.gateway, way.warmup_failures
        )
        for way in ways
    ]


class _Way:
    """One endpoint's requests: where they go each way, with what, and their loads."""

    def __init__(self, endpoint: Endpoint, upstream_url: str, gateway_url: str, key: str):
        self.endpoint = endpoint
        self.direct_url = f"{upstream_url}{endpoint.path}"
        self.through_url = f"{gateway_url}/v1{endpoint.path}"
        self.plain = endpoint.headers()
        self.keyed = {
            **self.plain,
            "Authorization": f"Bearer {key}",
            "X-Operation": endpoint.operation,
        }
        self.body = endpoint.body
        self.direct, self.gateway = Load(), Load()
        self.warmup_failures: list[str] = []


# Requests each way per turn: short turns, so that a stall of the machine (a disk
# flush, another process) falls on every side alike rather than on one side's turn.
BLOCK = 10


def _blocks(requests: int) -> list[int]:
    return [BLOCK] * (requests // BLOCK) + ([requests % BLOCK] if requests % BLOCK else [])


def _send(
    client: httpx.Client,
    url: str,
    headers: dict[str, str],
    body: bytes,
    count: int,
    concurrency: int,
) -> Load:
    """`count` POSTs from `concurrency` threads sharing one keep-alive pool."""
    load = Load()
    tickets = iter(range(count))
    lock = threading.Lock()
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            with lock:
                if next(tickets, None) is None:
                    return
            began = time.perf_counter()
            try:
                response = client.post(url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                load.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            took = time.perf_counter() - began
            if response.status_code == 200:
                load.latencies.append(took)
            else:
                text = " ".join(response.text.split())  # an HTML error page, on one line
                load.failures.append(f"HTTP {response.status_code}: {text[:200]}")

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    except KeyboardInterrupt:
        stop.set()
        raise
    load.elapsed = time.perf_counter() - began
    return load


def difference_interval(
    chat: LevelResult, other: LevelResult, rounds: int = 400, seed: int = 0
) -> tuple[float, float]:
    """How far `other`'s added p95 could be from chat's by the scatter of this run
    alone: the middle 95% of the difference over `rounds` bootstrap resamples of the
    four sets of latencies (seconds). Two endpoints that cost the same still differ by
    some tenths of a millisecond in one run; this says how many."""
    draw = random.Random(seed)
    samples = [
        chat.direct.latencies,
        chat.gateway.latencies,
        other.direct.latencies,
        other.gateway.latencies,
    ]

    def p95(latencies: list[float]) -> float:
        return percentile(sorted(draw.choices(latencies, k=len(latencies))), 0.95)

    differences = []
    for _ in range(rounds):
        chat_direct, chat_gateway, other_direct, other_gateway = map(p95, samples)
        differences.append((other_gateway - other_direct) - (chat_gateway - chat_direct))
    differences.sort()
    return percentile(differences, 0.025), percentile(differences, 0.975)


def signed(seconds: float) -> str:
    return f"{seconds * 1000:+.2f} ms"
