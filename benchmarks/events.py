"""`bin/manage bench_events`: a run's event stream under load, end to end.

One run emits `--events` (20,000) token events (written to the database, then
published to the run's group) at `--rate` events a second (1,000; 0 for as fast as it
goes), while `--clients` (10) websocket clients, in a process of their own
(`python -m benchmarks.event_watcher`), watch the run through a real daphne, logged in with a
session cookie as a browser is. Each event's text is its index, so every client can
tell each event apart. The clients are connected as a page that has loaded is: each
socket has received the run so far (one event, written before they connect) when the
producer starts.

Producers (`--producer`): `writer` (default) hands each event to a
`benchmarks.event_writer.EventWriter`, which writes what queued up since its last transaction in
the next one, at most one every 10 ms (group commit), as a producer of a fast stream
does; `emit` calls `chat.events.emit()` once per event, a transaction and a message
each, which a database that syncs every commit to disk holds to a few hundred a
second.

Channel layers (`--layer`, both by default):

- `memory`: the in-memory layer works within one process only, so daphne runs in this
  process (the Twisted reactor in a thread) and the producer in the main thread, as in
  the embedded mode, where the agent is a thread of the daphne process.
- `redis`: the layer of the scale mode (settings.py: channels_redis' pub/sub layer),
  daphne as a process of its own on `--redis-url`, the producer in this one, as in
  scale mode (a Celery worker publishing to daphne processes).
- `redis-core`: the same with channels_redis' core `RedisChannelLayer`, to compare.

Prints the rate the producer achieved (every event written and handed to the
publisher) and, per layer, per client: events delivered, lost, duplicated, events per
second delivered, and the latency from the moment the producer hands an event over
(the start of `emit()`) to the arrival of its frame (p50, p95, p99, max). Lost and
duplicated must be 0. Target: p95 under 100 ms with Redis at 1,000 events/s. The
benchmark's user, session and run are removed at the end.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from channels.layers import channel_layers
from django.conf import settings
from django.contrib.auth import (
    BACKEND_SESSION_KEY,
    HASH_SESSION_KEY,
    SESSION_KEY,
    get_user_model,
    load_backend,
)
from django.contrib.auth.models import Group
from django.core.management.base import CommandError
from django.db import connections
from redis.connection import parse_url

from benchmarks.event_writer import WRITER_INTERVAL, EventWriter
from benchmarks.harness import (
    START_TIMEOUT,
    Benchmark,
    DaphneProcess,
    Latencies,
    check_database_is_shareable,
    describe_database,
    free_port,
    interrupt_on_sigterm,
    wait_until_ready,
)
from chat.events import emit
from chat.models import ChatSession, Run, StreamEvent
from controlplane.tiers import TIER_GROUPS, StaffUser, Tier

USERNAME = "bench-events"
TARGET_P95_MS = 100.0
TARGET_RATE = 1000.0
# After the last emit, how long the clients wait for what is still on its way
# before they count it lost.
DRAIN_SECONDS = 30.0
LAYERS = ("memory", "redis", "redis-core")
PRODUCERS = ("writer", "emit")
MEMORY_LAYER = {
    "BACKEND": "controlplane.runtime.publisher.LocalChannelLayer",
    "CONFIG": {"capacity": 10_000, "expiry": 60},
}


def layer_config(layer: str, redis_url: str) -> dict[str, Any]:
    if layer == "memory":
        return MEMORY_LAYER
    if layer == "redis-core":
        return {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_url], "capacity": 10_000, "expiry": 60},
        }
    # As settings.py configures the scale mode.
    prefix = f"asgi.{parse_url(redis_url).get('db', 0)}."
    return {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [redis_url], "prefix": prefix},
    }


@dataclass
class Result:
    layer: str
    events: int
    emit_seconds: float
    clients: list[dict[str, Any]]
    emitted_at: list[float]

    def latencies(self, client: dict[str, Any]) -> list[float]:
        return [
            arrived - emitted
            for arrived, emitted in zip(client["arrived"], self.emitted_at, strict=True)
            if arrived is not None
        ]

    def delivered(self, client: dict[str, Any]) -> int:
        return sum(arrived is not None for arrived in client["arrived"])

    def per_second(self, client: dict[str, Any]) -> float:
        arrivals = [a for a in client["arrived"] if a is not None]
        if not arrivals:
            return 0.0
        return len(arrivals) / max(max(arrivals) - self.emitted_at[0], 1e-9)


class EventsBenchmark(Benchmark):
    """`bin/manage bench_events` (its arguments are parsed there), writing to `stdout`."""

    def run(self, **options: Any) -> None:
        events, clients, rate = options["events"], options["clients"], options["rate"]
        producer = options["producer"]
        if events < 1 or clients < 1 or rate < 0:
            raise CommandError("--events and --clients must be at least 1, --rate at least 0.")
        check_database_is_shareable("daphne process")
        self.stdout.write(
            f"bench_events: one run emits {events:,} events at "
            f"{f'{rate:,.0f} events/s' if rate else 'full speed'} to {clients} websocket "
            "clients (autobahn, in a process of their own) through daphne"
        )
        self.stdout.write(
            "Producer: "
            + (
                "benchmarks.event_writer.EventWriter (group commit: one transaction at most every "
                f"{WRITER_INTERVAL * 1000:.0f} ms with what queued up since the last)"
                if producer == "writer"
                else "chat.events.emit(), one transaction per event"
            )
        )
        self.stdout.write(f"Database: {describe_database()}")
        results: list[Result] = []
        # The in-process daphne can start once per process (Twisted's reactor): last.
        order = [layer for layer in ("redis", "redis-core", "memory") if layer in options["layer"]]
        with interrupt_on_sigterm():
            for layer in order:
                result = self._bench(layer, events, clients, rate, options["redis_url"], producer)
                self._print(result)
                results.append(result)
        self._print_target(results, rate)
        if any(self._lost_or_repeated(r) for r in results):
            raise CommandError("Events were lost or duplicated.")

    # -- one layer -----------------------------------------------------------------

    def _bench(
        self, layer: str, events: int, clients: int, rate: float, redis_url: str, producer: str
    ) -> Result:
        config = layer_config(layer, redis_url)
        use_layer(config)
        with bench_run() as (run, cookie), serving(layer, config, redis_url) as (base, describe):
            self.stdout.write("")
            self.stdout.write(f"Layer {layer}: {describe}")
            emit(run.pk, StreamEvent.Type.STATUS, {"status": "streaming", "detail": "bench"})
            with watching(base, run, cookie, clients, events, rate) as collect:
                started = time.perf_counter()
                emitted_at = produce(run.pk, events, rate, producer)
                emit_seconds = time.perf_counter() - started
                watched = collect()
        return Result(layer, events, emit_seconds, watched, emitted_at)

    # -- output --------------------------------------------------------------------

    def _print(self, result: Result) -> None:
        self.stdout.write(
            f"  emitted {result.events:,} events in {result.emit_seconds:.2f} s "
            f"({result.events / result.emit_seconds:,.0f} events/s)"
        )
        self.stdout.write(
            "  client  delivered   lost  dup   events/s    p50 ms    p95 ms    p99 ms    max ms"
        )
        everything: list[float] = []
        for number, client in enumerate(result.clients, 1):
            latencies = result.latencies(client)
            everything += latencies
            self.stdout.write(self._row(str(number), result, [client], latencies))
        self.stdout.write(self._row("all", result, result.clients, everything))

    def _row(
        self, label: str, result: Result, clients: list[dict[str, Any]], latencies: list[float]
    ) -> str:
        delivered = sum(result.delivered(c) for c in clients)
        lost = result.events * len(clients) - delivered
        repeated = sum(c["duplicates"] + c["unexpected"] for c in clients)
        rate = sum(result.per_second(c) for c in clients) / len(clients)
        if not latencies:
            return f"  {label:>6} {delivered:>10,} {lost:>6,} {repeated:>4,}  no event arrived"
        stats = Latencies.of(latencies)
        return (
            f"  {label:>6} {delivered:>10,} {lost:>6,} {repeated:>4,} {rate:>10,.0f} "
            f"{stats.p50 * 1000:>9.2f} {stats.p95 * 1000:>9.2f} "
            f"{stats.p99 * 1000:>9.2f} {stats.max * 1000:>9.2f}"
        )

    def _print_target(self, results: list[Result], rate: float) -> None:
        redis = next((r for r in results if r.layer == "redis"), None)
        label = "Target p95 under 100 ms with Redis at 1,000 events/s"
        if redis is None or rate != TARGET_RATE:
            self.stdout.write(f"{label}: not measured (needs --layer redis --rate 1000)")
            return
        latencies = [lat for c in redis.clients for lat in redis.latencies(c)]
        p95 = Latencies.of(latencies).p95 * 1000 if latencies else float("inf")
        achieved = redis.events / redis.emit_seconds
        met = p95 < TARGET_P95_MS and achieved >= 0.95 * TARGET_RATE
        met = met and not self._lost_or_repeated(redis)
        self.stdout.write(
            f"{label}: {'met' if met else 'MISSED'} (p95 {p95:.2f} ms at "
            f"{achieved:,.0f} events/s emitted, lost+duplicated "
            f"{'0' if not self._lost_or_repeated(redis) else 'not 0'})"
        )

    def _lost_or_repeated(self, result: Result) -> bool:
        return any(
            result.delivered(c) != result.events or c["duplicates"] or c["unexpected"]
            for c in result.clients
        )


# -- the producer ----------------------------------------------------------------------


def produce(run_id: int, events: int, rate: float, producer: str) -> list[float]:
    """Emit the events, paced; when each was handed over (time.time()). Returns once
    every event is written and handed to the publisher."""
    emitted_at: list[float] = []
    start = time.perf_counter()
    writer = EventWriter(run_id) if producer == "writer" else None
    try:
        for index in range(events):
            if rate:
                delay = start + index / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            emitted_at.append(time.time())
            if writer is not None:
                writer.emit(StreamEvent.Type.TOKEN, {"text": f"[{index}]"})
            else:
                emit(run_id, StreamEvent.Type.TOKEN, {"text": f"[{index}]"})
    finally:
        if writer is not None:
            writer.close()
    return emitted_at


def use_layer(layer: dict[str, Any]) -> None:
    """This process publishes through `layer` from now on."""
    settings.CHANNEL_LAYERS = {"default": layer}
    channel_layers.backends.clear()


# -- the run and who watches it -----------------------------------------------------------


@contextmanager
def bench_run() -> Iterator[tuple[Run, str]]:
    """An Owner, a session cookie for them, and a run; all removed afterwards."""
    remove_bench_rows()
    user = get_user_model().objects.create_user(username=USERNAME)
    user.groups.add(Group.objects.get(name=TIER_GROUPS[Tier.OWNER]))
    store = logged_in_session(user)
    chat = ChatSession.objects.create(user=user, title="bench_events")
    run = Run.objects.create(
        session=chat, started_by=user, mode="normal", max_steps=1,
        max_wall_clock_seconds=1, max_cost=0,
    )  # fmt: skip
    try:
        yield run, f"{settings.SESSION_COOKIE_NAME}={store.session_key}"
    finally:
        store.delete()
        remove_bench_rows()


def logged_in_session(user: StaffUser) -> Any:
    """A saved session of `user`, as logging in makes one: its cookie is theirs."""
    store = import_module(settings.SESSION_ENGINE).SessionStore()
    store[SESSION_KEY] = str(user.pk)
    # The first backend that restores a session's user, as Django's force_login picks
    # it (django-axes' comes first and only refuses locked-out logins).
    store[BACKEND_SESSION_KEY] = next(
        path for path in settings.AUTHENTICATION_BACKENDS if hasattr(load_backend(path), "get_user")
    )
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.save()
    return store


def remove_bench_rows() -> None:
    """The benchmark's user and everything of theirs (also from an interrupted run)."""
    users = get_user_model().objects.filter(username=USERNAME)
    ChatSession.objects.filter(user__in=users).delete()
    users.delete()


@contextmanager
def watching(
    base: str, run: Run, cookie: str, clients: int, events: int, rate: float
) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The clients' process, connected; yields a function that waits for its results."""
    child = subprocess.Popen(  # noqa: S603 (this Python, a fixed command line)
        [
            sys.executable, "-m", "benchmarks.event_watcher",
            "--url", f"ws://{base}/ws/runs/{run.pk}/",
            "--origin", f"http://{base}",
            "--cookie", cookie,
            "--clients", str(clients),
            "--events", str(events),
            "--drain", str(DRAIN_SECONDS),
        ],
        cwd=settings.BASE_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert child.stdout is not None
    try:
        line = child.stdout.readline().strip()
        if line != "ready":
            raise CommandError(f"The websocket clients could not connect: {line or 'no answer'}")

        def collect() -> list[dict[str, Any]]:
            """After the last emit: the clients wait DRAIN_SECONDS at most for the rest."""
            output, _ = child.communicate("emitted\n", timeout=DRAIN_SECONDS + 60)
            clients: list[dict[str, Any]] = json.loads(output)["clients"]
            return clients

        yield collect
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


# -- daphne ------------------------------------------------------------------------------


@contextmanager
def serving(layer: str, config: dict[str, Any], redis_url: str) -> Iterator[tuple[str, str]]:
    """daphne, ready: yields its host:port and what it is."""
    if layer == "memory":
        port = free_port()
        with _serving_in_this_process(port):
            yield (
                f"127.0.0.1:{port}",
                "in-memory layer; daphne in this process (a thread), the producer in the "
                "main thread",
            )
        return
    daphne = DaphneProcess(
        log_prefix="bench-events-daphne-",
        env={"REDIS_URL": redis_url},
        settings_lines=f"CHANNEL_LAYERS = {{'default': {config!r}}}",
    )
    with daphne:
        daphne.start()
        wait_until_ready(daphne.accepts_connections, daphne)
        try:
            yield (
                daphne.url.removeprefix("http://"),
                f"{config['BACKEND']} on {redis_url}; daphne in its own process "
                f"(pid {daphne.pid}), the producer in this one",
            )
        finally:
            connections.close_all()


@contextmanager
def _serving_in_this_process(port: int) -> Iterator[None]:
    """daphne on `port` in a thread of this process (the in-memory layer works within
    one process only), listening; stopped on exit."""
    settings.EMBEDDED_SCHEDULER = False  # no periodic jobs in a benchmark
    logging.getLogger("daphne").setLevel(logging.WARNING)  # not amid the results
    from daphne.endpoints import build_endpoint_description_strings
    from daphne.server import Server  # installs Twisted's asyncio reactor
    from twisted.internet import reactor

    from controlplane.asgi import application

    server = Server(
        application=application,
        endpoints=build_endpoint_description_strings(host="127.0.0.1", port=port),
        signal_handlers=False,
        verbosity=0,
    )
    thread = threading.Thread(target=server.run, name="bench-daphne", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _accepts_connections(port):
            if not thread.is_alive() or time.monotonic() > deadline:
                raise CommandError("daphne did not start in this process.")
            time.sleep(0.05)
        yield
    finally:
        reactor.callFromThread(reactor.stop)  # type: ignore[misc]
        thread.join(timeout=10)


def _accepts_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True
