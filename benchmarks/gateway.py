"""`bin/manage bench_gateway`: what the gateway adds to an AI call's latency.

Starts a fast local OpenAI-compatible upstream (`python -m benchmarks.upstream`) and
the gateway as a real daphne process on the configured database and cache; creates
a provider `bench-upstream` pointing at the upstream, a model, a route `bench`, a
service key and two daily budgets (the service's and the operation's: every call
reserves on both and settles both, as a real call does); then, at each concurrency
level, sends the same non-streaming chat completions to the upstream directly and
through the gateway (in turns of 10 each way, so that both see the machine as it is
at the time), and prints the latency percentiles of both, the latency the
gateway adds, and requests per second. Target: p95 added latency under 5 ms at
concurrency 1.

`--endpoint embeddings|speech|transcriptions|responses|messages` measures that
endpoint too, in the same run and in turns with chat (`benchmarks.gateway_endpoints`:
each has a model of its kind, priced by its unit, and a route), and prints whether
what it adds stays within what chat adds at concurrency 1, where chat's target is read
(at other levels, a reading): not more than chat's beyond the run's own scatter (the
resampled 95% interval of the difference, printed beside it). With
`--as-large`, also a chat whose request is as large as the endpoint's (its message
padded out), and how the endpoint compares with that: what an endpoint does apart
from how many bytes it carries. With `--control`, chat a second time under another
name, compared with chat as an endpoint is: what the comparison reads when nothing
differs.

The configuration rows are removed at the end (their creation and removal stay in
the audit trail); the two budgets, whose ledgers are history, are disabled instead.
The calls' `OperationLog` rows are append-only and stay, tagged with the service
`bench-gateway`, with their settled reservations. Both processes are stopped on
exit, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
from django.conf import settings
from django.core.management.base import CommandError, OutputWrapper
from django.db.models import Count, Q
from django.utils import timezone

from benchmarks.gateway_endpoints import (
    CONTROL,
    ENDPOINTS,
    OPERATION,
    Endpoint,
    chat_again,
    chat_as_large_as,
)
from benchmarks.gateway_load import LevelResult, difference_interval, measure, signed
from benchmarks.harness import (
    Benchmark,
    ChildProcess,
    DaphneProcess,
    check_database_is_shareable,
    describe_cache,
    describe_database,
    interrupt_on_sigterm,
    milliseconds,
    wait_until_ready,
)
from controlplane.money import ZERO, MoneySum, dollars
from controlplane.runtime.serving import freeze_startup_objects
from routing.models import (
    AIModel,
    Budget,
    OperationLog,
    Provider,
    Reservation,
    Route,
    ServiceKey,
)

PROVIDER = "bench-upstream"
SERVICE = "bench-gateway"
TARGET_ADDED_P95_MS = 5.0
# The level both targets are read at: one request at a time, latency without queueing.
TARGET_LEVEL = 1
CHAT = ENDPOINTS["chat"]


class GatewayBenchmark(Benchmark):
    """`bin/manage bench_gateway` (its arguments are parsed there), writing to `stdout`."""

    def __init__(self, stdout: OutputWrapper) -> None:
        super().__init__(stdout)
        # What is measured, by name: the endpoints, and a chat `--as-large`.
        self.endpoints: dict[str, Endpoint] = dict(ENDPOINTS)

    def run(self, **options: Any) -> None:
        requests, warmup = options["requests"], options["warmup"]
        levels = _levels(options["concurrency"])
        if requests < 1 or warmup < 0:
            raise CommandError("--requests must be at least 1 and --warmup at least 0.")
        endpoint = ENDPOINTS[options.get("endpoint") or "chat"]
        endpoints = [CHAT] if endpoint is CHAT else [CHAT, endpoint]
        baselines = [CHAT]
        if options.get("as_large"):
            if endpoint is CHAT:
                raise CommandError("--as-large compares an --endpoint other than chat.")
            baselines.append(chat_as_large_as(endpoint))
            endpoints.append(baselines[-1])
        control = chat_again() if options.get("control") else None
        if control is not None:
            endpoints.append(control)
        self.endpoints.update({e.name: e for e in endpoints})
        check_database_is_shareable("gateway process")
        self.stdout.write(
            f"bench_gateway: {requests} non-streaming requests each way per level and "
            f"endpoint ({', '.join(map(self._label, endpoints))}), concurrency "
            f"{','.join(map(str, levels))}, {warmup} warm-up requests each way first"
        )
        self.stdout.write(f"Database: {describe_database()}")
        self.stdout.write(f"Cache: {describe_cache()}")
        self.stdout.write(
            f"Budgets: each call reserves on and settles 2 daily budgets (service "
            f"'{SERVICE}', and its operation's: '{OPERATION}'...)"
        )
        # As the served process does (controlplane.asgi): no full garbage collection
        # walking Django's objects in the middle of a timed call.
        freeze_startup_objects()
        started = timezone.now()
        results: dict[tuple[str, int], LevelResult] = {}
        interrupted = False
        gateway = DaphneProcess(options["application"], log_prefix="bench-gateway-daphne-")
        with interrupt_on_sigterm(), _Upstream() as upstream, gateway:
            try:
                self._remove_rows(leftovers=True)
                upstream_url = upstream.start()
                raw_key = _create_rows(upstream_url)
                gateway_url = gateway.start()
                _wait_until_ready(gateway, raw_key)
                self.stdout.write(
                    f"Upstream: {upstream_url} (asyncio, TCP_NODELAY, pid {upstream.pid}); "
                    f"gateway: daphne on {gateway_url} (pid {gateway.pid})"
                )
                for level in levels:
                    measured = measure(
                        endpoints,
                        level,
                        requests,
                        warmup,
                        upstream_url,
                        gateway_url,
                        raw_key,
                        gateway,
                    )
                    for result in measured:
                        results[result.endpoint, level] = result
                        self._print_level(result)
                self._print_target(results)
                if endpoint is not CHAT:
                    for baseline in baselines:
                        self._print_within(results, endpoint, levels, baseline)
                if control is not None:
                    self._print_within(results, control, levels, CHAT)
                self._wait_for_records(started)
            except KeyboardInterrupt:
                interrupted = True
                self.stdout.write("Interrupted: stopping the processes and cleaning up.")
            finally:
                log = gateway.log_path
                had_failures = any(r.gateway.failures for r in results.values())
                gateway.stop(keep_log=had_failures)
                upstream.stop()
                if had_failures and log:
                    self.stdout.write(f"The gateway's log is kept in {log}")
                self._remove_rows()
                self._print_kept(started)
        if interrupted:
            raise CommandError("Interrupted.")
        failed = [f"{r.endpoint} {r.level}" for r in results.values() if not r.gateway.latencies]
        if failed:
            raise CommandError(
                f"Every request through the gateway failed at (endpoint, concurrency) {failed}."
            )

    # -- output --------------------------------------------------------------------

    def _print_level(self, result: LevelResult) -> None:
        direct, gateway = result.direct.stats(), result.gateway.stats()
        self.stdout.write(
            f"{self._label(self.endpoints[result.endpoint])}, concurrency {result.level}: "
            f"{result.requests} requests each way (after {result.warmup} warm-up requests "
            "each way)"
        )
        for label, load, stats in (
            ("direct to upstream  ", result.direct, direct),
            ("through the gateway ", result.gateway, gateway),
        ):
            if stats is None:
                self.stdout.write(f"  {label} no successful request")
            else:
                self.stdout.write(f"  {label} {stats.milliseconds()}  {load.per_second:,.0f} req/s")
            if load.failures:
                self.stdout.write(
                    f"  {label} {len(load.failures)} failed; first: {load.failures[0]}"
                )
        if result.warmup_failures:
            self.stdout.write(
                f"  {len(result.warmup_failures)} warm-up request(s) failed (not counted, "
                f"and logged by the gateway if they reached it); first: "
                f"{result.warmup_failures[0]}"
            )
        if direct is not None and gateway is not None:
            self.stdout.write(
                f"  added by the gateway p50 {milliseconds(gateway.p50 - direct.p50)}  "
                f"p95 {milliseconds(gateway.p95 - direct.p95)}  (gateway percentile minus direct)"
            )
        cpu, answered = result.gateway.cpu_seconds, len(result.gateway.latencies)
        if cpu is not None and answered:
            self.stdout.write(
                f"  gateway process CPU {milliseconds(cpu / answered)} per request "
                f"({cpu / result.gateway.elapsed:.0%} of a core; its own threads, all of them)"
            )

    def _print_target(self, results: dict[tuple[str, int], LevelResult]) -> None:
        target = (
            f"Target p95 added latency under {TARGET_ADDED_P95_MS:g} ms at concurrency "
            f"{TARGET_LEVEL}"
        )
        result = results.get(("chat", TARGET_LEVEL))
        stats = (result.direct.stats(), result.gateway.stats()) if result else (None, None)
        if stats[0] is None or stats[1] is None:
            self.stdout.write(f"{target}: not measured")
            return
        added = (stats[1].p95 - stats[0].p95) * 1000
        verdict = "met" if added < TARGET_ADDED_P95_MS else "MISSED"
        self.stdout.write(f"{target}: {verdict} ({added:.2f} ms)")

    def _print_within(
        self,
        results: dict[tuple[str, int], LevelResult],
        endpoint: Endpoint,
        levels: list[int],
        baseline: Endpoint,
    ) -> None:
        """Whether the endpoint adds no more than `baseline` does, level by level (p95):
        the target against chat at `TARGET_LEVEL`, where chat's own target is read; at
        other levels, and against chat as large (`--as-large`), a reading. Past a
        level the machine serves at once, what the gateway adds is mostly queueing,
        and so its CPU a request times the requests ahead: there an upload's bytes
        weigh, which a chat as large carries too.

        "No more" is read against the run's own scatter: an endpoint is over only when
        its difference from the baseline is more than 95% of the run's resampled
        scatter puts it (`difference_interval`). Two p95s of the same work differ by
        some tenths of a millisecond in one run (`--control` shows it), so reading
        the two figures alone would pass or fail an endpoint level with chat at the
        toss of a coin."""
        for level in levels:
            base = results[baseline.name, level].added_p95()
            other = results[endpoint.name, level].added_p95()
            if base is None or other is None:
                self.stdout.write(f"Concurrency {level}: not measured")
                continue
            low, high = difference_interval(
                results[baseline.name, level], results[endpoint.name, level]
            )
            within = low <= 0  # not more than the baseline's beyond this run's scatter
            if low > 0:
                reading = "more, beyond this run's scatter"
            elif high < 0:
                reading = "less, beyond this run's scatter"
            else:
                reading = "level within this run's scatter"
            figures = f"{milliseconds(other)} against {milliseconds(base)}: {reading}"
            if endpoint.name == CONTROL:
                self.stdout.write(
                    f"Control at concurrency {level}: chat measured again, the same requests "
                    f"in the same turns, reads {'within' if within else 'over'} chat's "
                    f"({figures}): the target's verdict when nothing differs"
                )
            elif baseline is CHAT and level == TARGET_LEVEL:
                self.stdout.write(
                    f"Target /v1{endpoint.path} p95 added latency within chat's at concurrency "
                    f"{level}: {'met' if within else 'MISSED'} ({figures})"
                )
            elif baseline is CHAT:
                self.stdout.write(
                    f"At concurrency {level}, a reading beside the target (read at "
                    f"concurrency {TARGET_LEVEL}, as chat's): /v1{endpoint.path} p95 added "
                    f"latency {'within' if within else 'over'} chat's ({figures})"
                )
            else:
                self.stdout.write(
                    f"Against {self._label(baseline)} at concurrency {level}: /v1{endpoint.path}"
                    f" p95 added latency {'within' if within else 'over'} its ({figures})"
                )
            self.stdout.write(
                f"  difference {signed(other - base)}; resampled, 95% of this run's own "
                f"scatter puts it between {signed(low)} and {signed(high)}"
            )

    @staticmethod
    def _label(endpoint: Endpoint) -> str:
        if endpoint.name in ENDPOINTS:
            return f"/v1{endpoint.path}"
        return f"/v1{endpoint.path} ({endpoint.name}: {len(endpoint.body):,} bytes)"

    def _remove_rows(self, *, leftovers: bool = False) -> None:
        removed = remove_bench_rows()
        if removed:
            what = "Removed rows left by an earlier run" if leftovers else "Removed"
            self.stdout.write(
                f"{what}: {', '.join(removed)} (their creation and removal are in the audit trail)"
            )

    def _wait_for_records(self, since: datetime) -> None:
        """Until the gateway has recorded every call it answered (it answers first and
        records just after), so that stopping it loses none and the count below is
        whole; a call still unrecorded after `RECORD_WAIT` seconds is reported."""
        held = Reservation.objects.filter(
            service=SERVICE, created_at__gte=since, status=Reservation.Status.HELD
        )
        deadline = time.monotonic() + RECORD_WAIT
        while (waiting := held.count()) and time.monotonic() < deadline:
            time.sleep(0.05)
        if waiting:
            self.stdout.write(
                f"{waiting} answered call(s) not recorded within {RECORD_WAIT:.0f} s: the "
                "stale sweep writes their reservations off."
            )

    def _print_kept(self, since: datetime) -> None:
        logs = OperationLog.objects.filter(service=SERVICE, at__gte=since)
        kept = logs.aggregate(rows=Count("pk"), total=MoneySum("cost"))
        reservations = Reservation.objects.filter(request_id__in=logs.values("request_id")).count()
        self.stdout.write(
            f"Kept: {kept['rows']} OperationLog rows tagged service '{SERVICE}' (the log is "
            f"append-only) and their {reservations} budget reservations; the calls "
            f"cost {dollars(kept['total'] or ZERO)} in all, as reported by the bench upstream."
        )


def _levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CommandError(f"--concurrency wants numbers like 1,10, not '{text}'.") from None
    if not levels or min(levels) < 1:
        raise CommandError("--concurrency levels must be at least 1.")
    return levels


# -- the rows ------------------------------------------------------------------------


def _create_rows(upstream_url: str) -> str:
    """The provider, a model and a route of each kind, the service key and budgets;
    returns the key's raw secret."""
    operations = sorted({endpoint.operation for endpoint in ENDPOINTS.values()})
    taken = Route.objects.filter(operation__in=operations).values_list("operation", flat=True)
    if taken:
        raise CommandError(
            f"Routes {', '.join(taken)} already exist and are not the benchmark's: the "
            "benchmark needs those operation names for itself."
        )
    provider = Provider.objects.create(
        name=PROVIDER, kind=Provider.Kind.COMPATIBLE, base_url=upstream_url, timeout_seconds=30
    )
    models: dict[str, AIModel] = {}
    for endpoint in ENDPOINTS.values():
        if endpoint.operation in models:
            continue
        models[endpoint.operation] = AIModel.objects.create(
            provider=provider,
            model_id=endpoint.model_id,
            name=f"Benchmark upstream {endpoint.kind} model",
            kind=endpoint.kind,
            context_length=128_000,
            **endpoint.prices,
        )
        Route.objects.create(
            operation=endpoint.operation,
            description="Made by bin/manage bench_gateway; removed when it ends.",
            primary_model=models[endpoint.operation],
        )
    _key, raw = ServiceKey.issue(name="bench", service=SERVICE, default_operation=OPERATION)
    for scope, fields in _budgets():
        budget = Budget.objects.filter(scope=scope, **fields).first() or Budget(
            scope=scope, **fields
        )
        budget.daily_limit, budget.enabled = BUDGET_LIMIT, True
        budget.save()
    return raw


# How long the gateway is given to record the calls it answered before it is stopped.
RECORD_WAIT = 30.0
BUDGET_LIMIT = Decimal(1_000_000)  # room for any run: the budgets are checked, not hit


def _budgets() -> list[tuple[str, dict[str, str]]]:
    """The service's budget and each benchmark operation's."""
    operations = sorted({endpoint.operation for endpoint in ENDPOINTS.values()})
    return [
        (Budget.Scope.SERVICE, {"service": SERVICE}),
        *((Budget.Scope.OPERATION, {"operation": operation}) for operation in operations),
    ]


def remove_bench_rows() -> list[str]:
    """Remove the benchmark's configuration rows (also those of an interrupted run)."""
    removed: list[str] = []
    for scope, fields in _budgets():
        for budget in Budget.objects.filter(scope=scope, enabled=True, **fields):
            budget.enabled = False
            budget.save()
            removed.append(f"{budget} (disabled: its ledgers are history)")
    for key in ServiceKey.objects.filter(service=SERVICE):
        key.delete()
        removed.append(f"service key {key}")
    provider = Provider.objects.filter(name=PROVIDER).first()
    if provider is None:
        return removed
    models = list(AIModel.objects.filter(provider=provider))
    uses = Q(primary_model__in=models) | Q(fallback_links__model__in=models)
    for route in Route.objects.filter(uses).distinct():
        route.delete()
        removed.append(f"route {route}")
    for model in models:
        model.delete()
        removed.append(f"model {model.model_id}")
    provider.delete()
    removed.append(f"provider {provider}")
    return removed


# -- the processes -------------------------------------------------------------------


class _Upstream(ChildProcess):
    """The bench upstream (`python -m benchmarks.upstream`), a child process stopped
    on exit."""

    def start(self) -> str:
        self.child = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.upstream"],
            cwd=settings.BASE_DIR,
            stdout=subprocess.PIPE,
        )
        assert self.child.stdout is not None
        line = self.child.stdout.readline().decode()
        if not line.startswith("listening on "):
            raise CommandError(f"The bench upstream did not start (it said {line!r}).")
        return f"http://127.0.0.1:{int(line.split()[-1])}/v1"


def _wait_until_ready(gateway: DaphneProcess, raw_key: str) -> None:
    """Until the gateway answers `GET /v1/models` with this run's key: which also
    proves it opened the same database."""
    headers = {"Authorization": f"Bearer {raw_key}"}
    with httpx.Client(timeout=5) as client:

        def answers() -> bool:
            try:
                response = client.get(f"{gateway.url}/v1/models", headers=headers)
            except httpx.HTTPError:
                return False
            if response.status_code == 401:
                raise CommandError(
                    "The gateway does not know the benchmark's service key: it is not "
                    "using this database."
                )
            return response.status_code == 200

        wait_until_ready(answers, gateway, name="The gateway (daphne)")
