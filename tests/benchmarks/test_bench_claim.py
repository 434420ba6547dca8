"""A smoke test of `manage.py bench_claim` at tiny sizes: it runs both ways, reports
in the expected format and cleans up. (The numbers are not tested: benchmarks are
run by hand.)"""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from selfheal.models import Task, Worker


def starting(lines: list[str], prefix: str) -> list[str]:
    return [line for line in lines if line.strip().startswith(prefix)]


# transaction=True: the server is another process, which sees committed rows only.
@pytest.mark.django_db(transaction=True)
def test_bench_claim_measures_both_ways_and_cleans_up(daphne_sees_the_test_database: Any):
    real = Task.objects.create(title="Real work", kind="noop")
    out = StringIO()
    call_command("bench_claim", "--tasks", "12", "--workers", "3", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == (
        "bench_claim: 12 tasks each way, 3 concurrent workers, claim then complete each task"
    )
    assert starting(lines, "Database: ")
    assert starting(lines, "Server: daphne on http://127.0.0.1:")
    for way in ("Through the HTTP API: ", "Through the model layer: "):
        (result,) = starting(lines, way)
        assert "12 of 12 tasks claimed and completed in " in result
        assert result.endswith(" tasks/s")
    for step in ("claim ", "complete "):
        rows = starting(lines, step)
        assert len(rows) == 2
        assert all(all(part in row for part in ("p50", "p95", "p99", "max")) for row in rows)
    verdicts = starting(lines, "every task claimed once and completed once: ")
    assert [line.split(": ")[1] for line in verdicts] == ["yes", "yes"]
    assert not starting(lines, "failures")
    assert lines[-1].startswith("Removed: 24 tasks and 3 workers of this run.")
    assert list(Task.objects.all()) == [real]  # real work untouched
    assert Task.objects.get(pk=real.pk).status == "pending"
    assert not Worker.objects.exists()


@pytest.mark.django_db
def test_bench_claim_wants_at_least_one_task_and_worker():
    with pytest.raises(CommandError, match="at least 1"):
        call_command("bench_claim", "--tasks", "0")
