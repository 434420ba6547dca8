"""Guardrails: failure fingerprints, loop and no-progress detection, repeated failure,
and the counters the page shows."""

from __future__ import annotations

from decimal import Decimal

import pytest

from chat.guardrails import (
    LOOP_THRESHOLD,
    NO_PROGRESS_THRESHOLD,
    Guardrails,
    canonical_arguments,
    fingerprint,
    normalise_error,
)
from chat.models import Run, StopReason


def a_run(**fields) -> Run:
    return Run(
        mode="normal",
        max_steps=10,
        max_wall_clock_seconds=300,
        max_cost=Decimal("0.5"),
        **fields,
    )


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (
            "Connection to 10.0.0.7:5432 refused after 3012 ms",
            "connection to 10.0.0.9:5432 refused after 12 ms",
        ),
        ("File '/srv/app/main.py' not found", 'File "/tmp/other.py" not found'),
        ("open /var/log/a.log: no such file", "open src/app/b.log: no such file"),
        (
            "task 3f2a7b9c-1111-2222-3333-444455556666 missing",
            "task 00000000-0000-0000-0000-000000000000 missing",
        ),
        ("object at 0xdeadbeef freed", "object at 0x7f3a freed"),
        ("commit 9fceb02d0ae598e95dc970b74767f19372d61af8 not found", "commit abcdef12 not found"),
        ("request req_8f3k2j9a failed", "request req_77ab12cd failed"),
        ("GET https://api.example.com/v1/x?y=2 returned 502", "GET http://other/y returned 503"),
    ],
)  # fmt: skip
def test_errors_that_differ_only_in_their_variable_parts_share_a_fingerprint(first, second):
    assert normalise_error(first) == normalise_error(second)
    assert fingerprint(first) == fingerprint(second)


def test_different_failures_get_different_fingerprints():
    assert fingerprint("connection refused") != fingerprint("permission denied")
    assert len(fingerprint("x")) == 64


def test_normalising_keeps_the_words_and_drops_the_values():
    text = "Host 'evil.example' is not in CHAT_HTTP_ALLOWLIST after 3 tries"
    assert normalise_error(text) == "host <str> is not in chat_http_allowlist after <n> tries"


def test_canonical_arguments_ignore_key_order():
    assert canonical_arguments({"b": 1, "a": [2, {"d": 1, "c": 0}]}) == canonical_arguments(
        {"a": [2, {"c": 0, "d": 1}], "b": 1}
    )


def test_the_same_call_five_times_in_a_row_is_a_loop():
    guards = Guardrails(a_run())
    for _ in range(LOOP_THRESHOLD - 1):
        guards.tool_called("list_tasks", {"status": "pending", "limit": 5})
    assert guards.tripped() is None

    guards.tool_called("list_tasks", {"limit": 5, "status": "pending"})

    trip = guards.tripped()
    assert trip is not None
    assert trip.reason == StopReason.LOOP_DETECTED
    assert trip.context == {"tool": "list_tasks", "count": 5}
    assert "list_tasks was called with the same arguments 5 times in a row" in trip.detail


def test_another_call_in_between_starts_the_loop_count_again():
    guards = Guardrails(a_run())
    for _ in range(4):
        guards.tool_called("list_tasks", {})
    guards.tool_called("queue_summary", {})
    for _ in range(4):
        guards.tool_called("list_tasks", {})

    assert guards.tripped() is None
    assert guards.counters()["loop"] == {"count": 4, "threshold": 5}


def test_three_identical_states_in_a_row_are_no_progress():
    guards = Guardrails(a_run())
    state = {"text": "", "tools": [["list_tasks", "ok", [], ""]]}
    guards.step_observed(state)
    guards.step_observed({"text": "", "tools": [["list_tasks", "ok", [{"id": 1}], ""]]})
    for _ in range(NO_PROGRESS_THRESHOLD - 1):
        guards.step_observed(state)
    assert guards.tripped() is None

    guards.step_observed(state)

    trip = guards.tripped()
    assert trip is not None
    assert trip.reason == StopReason.NO_PROGRESS


def test_one_fingerprint_failing_as_often_as_the_run_allows_is_a_repeated_failure():
    run = a_run(max_retries_per_fingerprint=3, retries_by_fingerprint={"a" * 64: 2, "b" * 64: 1})
    guards = Guardrails(run)
    assert guards.tripped() is None

    run.retries_by_fingerprint["a" * 64] = 3
    guards.failure_recorded("a" * 64, "ConnectionError: refused")

    trip = guards.tripped()
    assert trip is not None
    assert trip.reason == StopReason.REPEATED_FAILURE
    assert trip.context == {
        "fingerprint": "a" * 64,
        "count": 3,
        "error": "ConnectionError: refused",
    }


def test_a_repeated_failure_is_reported_before_a_loop_or_no_progress():
    run = a_run(max_retries_per_fingerprint=3, retries_by_fingerprint={"f" * 64: 3})
    guards = Guardrails(run)
    for _ in range(5):
        guards.tool_called("flaky", {})
        guards.step_observed({"same": True})

    assert guards.tripped().reason == StopReason.REPEATED_FAILURE


def test_the_counters_survive_a_round_trip_through_the_run():
    run = a_run(max_retries_per_fingerprint=4, retries_by_fingerprint={"c" * 64: 2})
    guards = Guardrails(run)
    guards.tool_called("list_tasks", {})
    guards.tool_called("list_tasks", {})
    guards.step_observed({"x": 1})
    run.guardrails = {**guards.state(), "kept": 12.5}

    again = Guardrails(run)

    assert again.counters() == {
        "loop": {"count": 2, "threshold": 5},
        "no_progress": {"count": 1, "threshold": 3},
        "repeated_failure": {"count": 2, "threshold": 4},
    }
    assert again.state()["kept"] == 12.5
