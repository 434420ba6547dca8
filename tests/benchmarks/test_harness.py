"""What the benchmark commands share: nearest-rank percentiles, and daphne as a child
process that is stopped on exit and keeps its log only when told the run failed."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from django.core.management.base import CommandError
from django.db import connections

from benchmarks.harness import (
    DaphneProcess,
    Latencies,
    check_database_is_shareable,
    interrupt_on_sigterm,
    percentile,
    wait_until_ready,
)


def test_percentiles_are_the_nearest_rank_of_the_samples():
    stats = Latencies.of([float(n) for n in range(100, 0, -1)])  # 1..100, unsorted
    assert (stats.count, stats.p50, stats.p95, stats.p99, stats.max) == (100, 50, 95, 99, 100)
    assert stats.mean == 50.5


def test_a_percentile_of_a_few_samples_rounds_the_rank_up():
    assert [percentile([1.0, 2.0, 3.0], p) for p in (0, 0.34, 0.5, 0.67, 0.95)] == [1, 2, 2, 3, 3]


def test_a_percentile_of_no_samples_is_an_error():
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 0.5)


def test_latencies_in_seconds_print_in_milliseconds():
    stats = Latencies.of([0.0035, 0.001, 0.002])
    assert stats.milliseconds() == "p50 2.00 ms  p95 3.50 ms  p99 3.50 ms  max 3.50 ms"


def test_sigterm_interrupts_like_ctrl_c_and_the_handler_is_put_back():
    def terminate_this_process() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler runs before this returns

    before = signal.getsignal(signal.SIGTERM)
    with interrupt_on_sigterm(), pytest.raises(KeyboardInterrupt):
        terminate_this_process()
    assert signal.getsignal(signal.SIGTERM) is before


def test_an_in_memory_sqlite_database_cannot_be_shared(monkeypatch: pytest.MonkeyPatch):
    database = connections["default"]
    monkeypatch.setattr(database, "vendor", "sqlite")
    monkeypatch.setitem(database.settings_dict, "NAME", ":memory:")
    with pytest.raises(CommandError, match="which the gateway process cannot open"):
        check_database_is_shareable("gateway process")


def test_daphne_serves_until_stopped_and_then_its_log_is_gone():
    with DaphneProcess(settings_lines="print('bench settings read')") as daphne:
        daphne.start()
        child, log = daphne.child, daphne.log_path
        wait_until_ready(daphne.accepts_connections, daphne)
        assert daphne.url == f"http://127.0.0.1:{daphne.port}"
        assert child is not None
        assert daphne.pid == child.pid
        assert "bench settings read" in daphne.output()
        assert log is not None
        assert Path(log).exists()
    assert child.returncode is not None
    assert daphne.exited()
    assert not daphne.accepts_connections()
    assert not Path(log).exists()


def test_daphne_that_fails_to_start_keeps_its_log_when_asked():
    daphne = DaphneProcess("no_such_module:application")
    log = None
    try:
        daphne.start()
        log = daphne.log_path
        with pytest.raises(CommandError, match="daphne did not start") as failure:
            wait_until_ready(daphne.accepts_connections, daphne, timeout=30)
        assert "no_such_module" in str(failure.value)
        daphne.stop(keep_log=True)
        assert log is not None
        assert "no_such_module" in Path(log).read_text()
    finally:
        daphne.stop()
        if log is not None:
            Path(log).unlink(missing_ok=True)
