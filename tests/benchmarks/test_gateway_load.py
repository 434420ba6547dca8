"""How far apart `bench_gateway --endpoint` finds two endpoints by a run's own scatter."""

from __future__ import annotations

import random

from benchmarks.gateway_load import LevelResult, Load, difference_interval


def result(name: str, direct: list[float], gateway: list[float]) -> LevelResult:
    return LevelResult(name, 1, len(direct), 0, Load(direct), Load(gateway))


def latencies(seed: int, shift: float = 0.0) -> list[float]:
    """A run's latencies in seconds: about 9 ms, with a tail."""
    draw = random.Random(seed)
    return [0.008 + draw.expovariate(1 / 0.0015) + shift for _ in range(2000)]


def test_two_endpoints_of_the_same_cost_differ_by_no_more_than_the_scatter() -> None:
    chat = result("chat", latencies(1), latencies(2))
    other = result("other", latencies(3), latencies(4))

    low, high = difference_interval(chat, other)

    assert low < 0 < high
    assert high - low < 0.002  # tenths of a millisecond, not the whole latency


def test_an_endpoint_a_millisecond_dearer_or_cheaper_is_told_apart() -> None:
    chat = result("chat", latencies(1), latencies(2))
    dearer = result("dearer", latencies(3), latencies(4, shift=0.001))
    cheaper = result("cheaper", latencies(3), latencies(4, shift=-0.001))

    assert difference_interval(chat, dearer)[0] > 0
    assert difference_interval(chat, cheaper)[1] < 0
