"""Smoke tests of the benchmark commands at tiny sizes: they run and report in the
expected format. (The numbers themselves are not tested: benchmarks are run by hand.)"""

from __future__ import annotations

import random
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import OutputWrapper

from benchmarks.gateway import GatewayBenchmark
from benchmarks.gateway_endpoints import ENDPOINTS
from benchmarks.gateway_load import LevelResult, Load
from routing.models import AIModel, OperationLog, Provider, Route, RouteFallback, ServiceKey


def run(*args: str) -> list[str]:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().splitlines()


def starting(lines: list[str], prefix: str) -> list[str]:
    return [line for line in lines if line.strip().startswith(prefix)]


def bench_endpoint(endpoint: str, *flags: str) -> list[str]:
    """`bench_gateway --endpoint endpoint` at concurrency 1: 10 requests each way, after 1."""
    return run(
        "bench_gateway",
        "--endpoint",
        endpoint,
        "--requests",
        "10",
        "--concurrency",
        "1",
        "--warmup",
        "1",
        *flags,
    )


@pytest.mark.django_db
def test_bench_route_prints_percentiles_throughput_and_the_target():
    lines = run("bench_route", "--routes", "5", "--calls", "50")
    assert lines[0].startswith("bench_route: 5 routes")
    assert starting(lines, "Database: ")
    assert starting(lines, "Cache: ")
    (timing,) = starting(lines, "route() per call: ")
    for label in ("p50", "p95", "p99", "max"):
        assert f" {label} " in timing
    assert starting(lines, "Throughput: ")
    (target,) = starting(lines, "Target p99 under 1 ms: ")
    assert target.split(": ")[1].split()[0] in {"met", "MISSED"}


@pytest.mark.django_db
def test_bench_route_leaves_no_rows_behind():
    def counts() -> tuple[int, ...]:
        return tuple(table.objects.count() for table in (Route, RouteFallback, AIModel, Provider))

    before = counts()
    run("bench_route", "--routes", "3", "--calls", "10")
    assert counts() == before


# transaction=True: the gateway is another process, which sees committed rows only.
@pytest.mark.django_db(transaction=True)
def test_bench_gateway_prints_both_paths_per_level_and_cleans_up(
    daphne_sees_the_test_database: Any,
):
    lines = run("bench_gateway", "--requests", "20", "--concurrency", "1,2", "--warmup", "2")
    assert lines[0].startswith(
        "bench_gateway: 20 non-streaming requests each way per level and endpoint "
        "(/v1/chat/completions)"
    )
    assert starting(lines, "Database: ")
    assert starting(lines, "Upstream: ")
    assert [line.split(":")[0] for line in starting(lines, "/v1/chat/completions, ")] == [
        "/v1/chat/completions, concurrency 1",
        "/v1/chat/completions, concurrency 2",
    ]
    for path in ("direct to upstream", "through the gateway"):
        rows = starting(lines, path)
        assert len(rows) == 2
        for row in rows:
            assert all(part in row for part in ("p50", "p95", "p99", "req/s"))
        assert not any("failed" in row for row in rows)
    added = starting(lines, "added by the gateway")
    assert len(added) == 2
    assert all("p50" in row and "p95" in row for row in added)
    (target,) = starting(lines, "Target p95 added latency under 5 ms at concurrency 1: ")
    assert target.split(": ")[1].split()[0] in {"met", "MISSED"}
    assert starting(lines, "Removed: ")
    (kept,) = starting(lines, "Kept: ")
    assert "44 OperationLog rows tagged service 'bench-gateway'" in kept

    assert not Provider.objects.filter(name="bench-upstream").exists()
    assert not Route.objects.filter(operation="bench").exists()
    assert not ServiceKey.objects.filter(service="bench-gateway").exists()
    calls = OperationLog.objects.filter(service="bench-gateway")
    assert calls.count() == 2 * (20 + 2)
    assert set(calls.values_list("status", flat=True)) == {OperationLog.Status.OK}


@pytest.mark.django_db(transaction=True)
def test_bench_gateway_measures_another_endpoint_beside_chat_and_cleans_up(
    daphne_sees_the_test_database: Any,
):
    lines = bench_endpoint("transcriptions", "--as-large")
    assert lines[0].startswith(
        "bench_gateway: 10 non-streaming requests each way per level and endpoint "
        "(/v1/chat/completions, /v1/audio/transcriptions, /v1/chat/completions (chat as "
        "large as transcriptions: "
    )
    for path in ("/v1/chat/completions, ", "/v1/audio/transcriptions, "):
        assert [line.split(":")[0] for line in starting(lines, path)] == [f"{path}concurrency 1"]
    assert not any("failed" in line for line in starting(lines, "through the gateway"))
    (within,) = starting(lines, "Target /v1/audio/transcriptions p95 added latency within chat's")
    assert within.split(": ")[1].split()[0] in {"met", "MISSED"}
    (against_large,) = starting(lines, "Against /v1/chat/completions (chat as large as ")
    assert "/v1/audio/transcriptions p95 added latency " in against_large
    scatters = starting(lines, "difference ")
    assert len(scatters) == 2
    assert all("95% of this run's own scatter puts it between " in line for line in scatters)

    calls = OperationLog.objects.filter(service="bench-gateway")
    assert calls.filter(kind="transcription", status="ok").count() == 10 + 1
    # Chat, and chat with a request as large as the transcription's.
    assert calls.filter(kind="chat", status="ok").count() == 2 * (10 + 1)
    # Priced from the catalog: one second of audio at the benchmark model's price.
    assert {row.cost for row in calls.filter(kind="transcription")} == {Decimal("0.0001")}
    assert not Provider.objects.filter(name="bench-upstream").exists()
    assert not Route.objects.filter(operation__startswith="bench").exists()


@pytest.mark.django_db(transaction=True)
def test_bench_gateway_control_measures_chat_twice_and_compares_the_two(
    daphne_sees_the_test_database: Any,
):
    lines = bench_endpoint("embeddings", "--control")
    assert lines[0].startswith(
        "bench_gateway: 10 non-streaming requests each way per level and endpoint "
        "(/v1/chat/completions, /v1/embeddings, /v1/chat/completions (chat again: "
    )
    assert len(starting(lines, "/v1/chat/completions (chat again: ")) == 1
    (within,) = starting(lines, "Target /v1/embeddings p95 added latency within chat's")
    assert within.split(": ")[1].split()[0] in {"met", "MISSED"}
    (control,) = starting(lines, "Control at concurrency 1: chat measured again, ")
    assert "chat's (" in control
    assert control.endswith("): the target's verdict when nothing differs")
    assert not starting(lines, "Against ")
    assert len(starting(lines, "difference ")) == 2
    assert not any("failed" in line for line in starting(lines, "through the gateway"))

    calls = OperationLog.objects.filter(service="bench-gateway", status="ok")
    assert calls.filter(kind="embedding").count() == 10 + 1
    assert calls.filter(kind="chat").count() == 2 * (10 + 1)


def test_bench_gateway_says_what_failed_among_its_warm_up_requests():
    out = StringIO()
    answered = Load(latencies=[0.001, 0.002], elapsed=0.003)
    result = LevelResult(
        "chat", 1, 2, 3, answered, answered, warmup_failures=["HTTP 503: database locked"] * 2
    )

    GatewayBenchmark(OutputWrapper(out))._print_level(result)

    (said,) = starting(out.getvalue().splitlines(), "2 warm-up request(s) failed")
    assert said.endswith("first: HTTP 503: database locked")


def level_result(endpoint: str, added_ms: float, seed: int, level: int = 1) -> LevelResult:
    """A level's result whose gateway adds about `added_ms` to a direct call, with
    some scatter (the same for every seed: only the draws differ)."""
    draw = random.Random(seed)
    direct = [0.001 + draw.uniform(0, 0.0005) for _ in range(400)]
    gateway = [d + added_ms / 1000 + draw.uniform(0, 0.0005) for d in direct]
    return LevelResult(endpoint, level, 400, 0, Load(direct, elapsed=1), Load(gateway, elapsed=1))


@pytest.mark.parametrize(
    ("added_ms", "verdict", "reading"),
    [
        (6.0, "MISSED", "more, beyond this run's scatter"),
        (5.0, "met", "level within this run's scatter"),
        (4.0, "met", "less, beyond this run's scatter"),
    ],
)
def test_an_endpoint_is_over_chat_only_beyond_the_runs_own_scatter(
    added_ms: float, verdict: str, reading: str
):
    """Chat adds about 5 ms. An endpoint that adds as much, with other draws of the
    same scatter, is level with it though its p95 reads a little over chat's; one that
    adds 1 ms more is over, one that adds 1 ms less under."""
    results = {
        ("chat", 1): level_result("chat", 5.0, seed=1),
        ("embeddings", 1): level_result("embeddings", added_ms, seed=4),
    }
    endpoint_p95, chat_p95 = (results[name, 1].added_p95() or 0 for name in ("embeddings", "chat"))
    assert (endpoint_p95 > chat_p95) == (added_ms >= 5.0)
    bench = GatewayBenchmark(OutputWrapper(out := StringIO()))

    bench._print_within(results, ENDPOINTS["embeddings"], [1], ENDPOINTS["chat"])

    target, difference = out.getvalue().splitlines()
    assert target.startswith(
        f"Target /v1/embeddings p95 added latency within chat's at concurrency 1: {verdict} ("
    )
    assert target.endswith(f": {reading})")
    assert difference.startswith("  difference ")
    assert "; resampled, 95% of this run's own scatter puts it between " in difference


def test_past_concurrency_1_an_endpoint_against_chat_is_a_reading_not_the_target():
    results = {
        (name, level): level_result(name, added, seed=seed, level=level)
        for level in (1, 10)
        for name, added, seed in (("chat", 5.0, 1), ("transcriptions", 6.0, 4))
    }
    bench = GatewayBenchmark(OutputWrapper(out := StringIO()))

    bench._print_within(results, ENDPOINTS["transcriptions"], [1, 10], ENDPOINTS["chat"])

    target, _, reading, _ = out.getvalue().splitlines()
    assert target.startswith(
        "Target /v1/audio/transcriptions p95 added latency within chat's at concurrency 1: MISSED"
    )
    assert reading.startswith(
        "At concurrency 10, a reading beside the target (read at concurrency 1, as chat's): "
        "/v1/audio/transcriptions p95 added latency over chat's ("
    )
