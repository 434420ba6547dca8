"""`bin/manage bench_ingest`: how many log records a second one daphne process takes
in over OTLP/HTTP, grouping and counting included, and that none is lost.

Starts daphne as a child process on the configured database and cache (PostgreSQL
is what the target is about: `DATABASE_URL=postgres://... bin/manage bench_ingest`;
`--migrate` first brings a new database's tables in), creates a log source
`bench-ingest` with an ingest key, and builds OTLP/JSON batches of `--batch` records
(500) from the labelled LogHub samples in `--data` (every system's lines with their
levels, each system a service `bench-ingest-<system>`, shuffled so a batch mixes
them). `--concurrency` clients (4) then post batches, one after the other each, for
`--seconds` (60) after an untimed warm-up round that shows the grouper every
pattern once. It prints records a second over the timed window, request latency
percentiles, the resident memory (RSS) and CPU time of the daphne process at the
end, and records lost: every record of a batch answered 200 (less those it
rejected) must be counted under a fingerprint and in its service's minute, summed
from the database after the run. Target: at least 10,000 records a second, 0 lost.

Fix tasks (`healthmon.fix_tasks`) are off in the served process (a task per new
error pattern would fill the task engine with the benchmark's patterns): they run
in the background after a batch commits, not in the request measured here.

The source, key, fingerprints and service minutes of the run are removed at the end
(and those an interrupted run left, at the start). Daphne is stopped on exit, Ctrl-C
and SIGTERM included.
"""

from __future__ import annotations

import csv
import json
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.db.models import Sum

from benchmarks.harness import (
    Benchmark,
    DaphneProcess,
    Latencies,
    check_database_is_shareable,
    describe_cache,
    describe_database,
    interrupt_on_sigterm,
    wait_until_ready,
)
from controlplane.runtime.serving import freeze_startup_objects
from healthmon.ingest_keys import issue_key
from healthmon.models import Fingerprint, LogSource, ServiceMinute

SOURCE = "bench-ingest"
SERVICE_PREFIX = "bench-ingest-"
TARGET_RECORDS_PER_SECOND = 10_000
# The served process opens no fix tasks (see the module's docstring).
SETTINGS_LINES = "HEALTHMON_TASK_MIN_COUNT = 10**12"
_SEVERITY = {"debug": 5, "info": 9, "notice": 10, "warn": 13, "warning": 13, "error": 17}
_SEVERITY.update({"err": 17, "fatal": 21, "critical": 21, "severe": 17, "fine": 5})


@dataclass(frozen=True)
class Line:
    service: str
    message: str
    level: str


def load_lines(data: Path) -> list[Line]:
    """Every labelled LogHub line with its level (the CSV's Level column, when it has one)."""
    if not data.is_dir():
        raise CommandError(f"No labelled log samples at {data} (see --data).")
    lines = []
    for folder in sorted(path for path in data.iterdir() if path.is_dir()):
        files = sorted(folder.glob("*structured*.csv"))
        if not files:
            continue
        service = f"{SERVICE_PREFIX}{folder.name.lower()}"
        with files[0].open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                level = (row.get("Level") or "info").strip().lower()
                lines.append(Line(service, row["Content"], level))
    if not lines:
        raise CommandError(f"No *structured*.csv files under {data}.")
    return lines


def build_batches(lines: list[Line], size: int, seed: int) -> list[tuple[bytes, int]]:
    """OTLP/JSON bodies of `size` records each (and their record counts), one
    resource per service as an SDK groups them."""
    shuffled = list(lines)
    random.Random(seed).shuffle(shuffled)
    now = str(time.time_ns())
    batches = []
    for start in range(0, len(shuffled), size):
        chunk = shuffled[start : start + size]
        by_service: dict[str, list[dict[str, Any]]] = {}
        for line in chunk:
            by_service.setdefault(line.service, []).append(
                {
                    "timeUnixNano": now,
                    "severityNumber": _SEVERITY.get(line.level, 9),
                    "severityText": line.level.upper(),
                    "body": {"stringValue": line.message},
                    "attributes": [{"key": "bench", "value": {"boolValue": True}}],
                }
            )
        document = {
            "resourceLogs": [
                {
                    "resource": {
                        "attributes": [{"key": "service.name", "value": {"stringValue": service}}]
                    },
                    "scopeLogs": [{"scope": {"name": "bench"}, "logRecords": records}],
                }
                for service, records in by_service.items()
            ]
        }
        batches.append((json.dumps(document).encode(), len(chunk)))
    return batches


@dataclass
class Load:
    """What the clients sent and what the server said, over one window."""

    latencies: list[float] = field(default_factory=list)
    accepted: int = 0  # records in batches answered 200, less those it rejected
    rejected: int = 0
    failures: dict[int, int] = field(default_factory=dict)  # status (0: no answer) -> count
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, seconds: float, status: int, records: int, rejected: int) -> None:
        with self.lock:
            if status == 200:
                self.latencies.append(seconds)
                self.accepted += records - rejected
                self.rejected += rejected
            else:
                self.failures[status] = self.failures.get(status, 0) + 1


class IngestBenchmark(Benchmark):
    """`bin/manage bench_ingest` (its arguments are parsed there), writing to `stdout`."""

    def run(self, **options: Any) -> None:
        seconds, batch, concurrency = options["seconds"], options["batch"], options["concurrency"]
        if seconds <= 0 or batch < 1 or concurrency < 1:
            raise CommandError("--seconds, --batch and --concurrency must be positive.")
        check_database_is_shareable("daphne process")
        if options["migrate"]:
            call_command("migrate", verbosity=0)
        lines = load_lines(Path(options["data"]))
        batches = build_batches(lines, batch, options["seed"])
        self.stdout.write(
            f"bench_ingest: OTLP/HTTP JSON batches of {batch} records ({len(batches)} distinct "
            f"batches from {len(lines)} LogHub lines, {len({ln.service for ln in lines})} "
            f"services), {concurrency} clients, {seconds} s timed"
        )
        self.stdout.write(f"Database: {describe_database()}")
        if connection.vendor != "postgresql":
            self.stdout.write("Note: the target is about PostgreSQL; this run is on SQLite.")
        self.stdout.write(f"Cache: {describe_cache()}")
        freeze_startup_objects()
        daphne = DaphneProcess(log_prefix="bench-ingest-daphne-", settings_lines=SETTINGS_LINES)
        interrupted = False
        with interrupt_on_sigterm(), daphne:
            try:
                self._remove_rows(leftovers=True)
                raw_key = _create_source()
                url = f"{daphne.start()}/v1/logs"
                headers = {"Content-Type": "application/json", "X-Ingest-Key": raw_key}
                wait_until_ready(lambda: _answers(url, headers), daphne, name="daphne")
                self.stdout.write(f"Server: daphne on {daphne.url} (pid {daphne.pid})")
                warmup = _send(url, headers, batches, concurrency, rounds=1)
                self.stdout.write(
                    f"Warm-up: {warmup.accepted:,} records in {len(warmup.latencies)} batches"
                    + (f"; failed requests by status: {warmup.failures}" if warmup.failures else "")
                )
                cpu_before = daphne.cpu_seconds()
                started = time.monotonic()
                timed = _send(url, headers, batches, concurrency, until=started + seconds)
                elapsed = time.monotonic() - started
                cpu_after = daphne.cpu_seconds()
                rss = _rss_bytes(daphne.pid)
                self._report(warmup, timed, elapsed, rss, cpu_before, cpu_after)
            except KeyboardInterrupt:
                interrupted = True
                self.stdout.write("Interrupted: stopping daphne and cleaning up.")
            finally:
                daphne.stop()
                self._remove_rows()
        if interrupted:
            raise CommandError("Interrupted.")

    def _report(
        self,
        warmup: Load,
        timed: Load,
        elapsed: float,
        rss: int | None,
        cpu_before: float | None,
        cpu_after: float | None,
    ) -> None:
        rate = timed.accepted / elapsed
        self.stdout.write(
            f"Timed: {timed.accepted:,} records in {len(timed.latencies)} batches over "
            f"{elapsed:.1f} s = {rate:,.0f} records/s"
            + (f"; failed requests by status: {timed.failures}" if timed.failures else "")
        )
        if timed.latencies:
            self.stdout.write(f"Request latency: {Latencies.of(timed.latencies).milliseconds()}")
        if rss is not None:
            self.stdout.write(f"daphne RSS at the end: {rss / 2**20:.0f} MiB")
        if cpu_before is not None and cpu_after is not None and timed.accepted:
            cpu = cpu_after - cpu_before
            self.stdout.write(
                f"daphne CPU: {cpu:.1f} s over the timed window "
                f"({cpu / timed.accepted * 1e6:.0f} us a record)"
            )
        sent = warmup.accepted + timed.accepted
        services = Fingerprint.objects.filter(service__startswith=SERVICE_PREFIX)
        counted = services.aggregate(total=Sum("count"))["total"] or 0
        minutes = ServiceMinute.objects.filter(service__startswith=SERVICE_PREFIX)
        in_minutes = minutes.aggregate(total=Sum("records"))["total"] or 0
        self.stdout.write(
            f"Records accepted (warm-up included): {sent:,}; counted under fingerprints: "
            f"{counted:,}; in service minutes: {in_minutes:,}; rejected: "
            f"{warmup.rejected + timed.rejected}; lost: {sent - min(counted, in_minutes):,}"
        )
        self.stdout.write(f"Fingerprints: {services.count():,}")
        verdict = "met" if rate >= TARGET_RECORDS_PER_SECOND else "NOT met"
        self.stdout.write(
            f"Target {TARGET_RECORDS_PER_SECOND:,} records/s: {verdict}; lost 0: "
            f"{'met' if sent == counted == in_minutes else 'NOT met'}"
        )

    def _remove_rows(self, *, leftovers: bool = False) -> None:
        fingerprints, _ = Fingerprint.objects.filter(service__startswith=SERVICE_PREFIX).delete()
        minutes, _ = ServiceMinute.objects.filter(service__startswith=SERVICE_PREFIX).delete()
        sources = LogSource.objects.filter(name=SOURCE)
        for source in sources:
            source.delete()  # audited, with its keys
        if leftovers and (fingerprints or minutes or sources):
            self.stdout.write("Removed rows left by an earlier run.")
        elif not leftovers:
            self.stdout.write(
                f"Removed the run's source '{SOURCE}', its key and the rows of services "
                f"{SERVICE_PREFIX}* ({fingerprints:,} rows with their counts and samples)."
            )


def _create_source() -> str:
    source = LogSource.objects.create(
        name=SOURCE, service=f"{SERVICE_PREFIX}default", kind=LogSource.Kind.OTLP
    )
    return issue_key(source, "bench")[1]


def _answers(url: str, headers: dict[str, str]) -> bool:
    try:
        response = httpx.post(url, content=b"{}", headers=headers, timeout=5)
    except httpx.TransportError:
        return False
    if response.status_code != 200:
        raise CommandError(f"/v1/logs answered {response.status_code}: {response.text[:500]}")
    return True


def _send(
    url: str,
    headers: dict[str, str],
    batches: list[tuple[bytes, int]],
    concurrency: int,
    *,
    rounds: int | None = None,
    until: float | None = None,
) -> Load:
    """Post the batches from `concurrency` clients: each batch `rounds` times, or over
    and over until the monotonic time `until`."""
    load = Load()
    counter = iter(range(10**12))
    total = len(batches) * rounds if rounds is not None else None

    def client() -> None:
        with httpx.Client(timeout=60, headers=headers) as http:
            while True:
                number = next(counter)
                if (total is not None and number >= total) or (
                    until is not None and time.monotonic() >= until
                ):
                    return
                body, records = batches[number % len(batches)]
                began = time.perf_counter()
                try:
                    response = http.post(url, content=body)
                except httpx.TransportError:
                    load.note(time.perf_counter() - began, 0, records, 0)
                    continue
                rejected = 0
                if response.status_code == 200:
                    partial = response.json().get("partialSuccess") or {}
                    rejected = int(partial.get("rejectedLogRecords", 0))
                load.note(time.perf_counter() - began, response.status_code, records, rejected)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return load


def _rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
