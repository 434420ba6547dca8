"""The fuzz suite: any body, header and query string gets a 4xx with a JSON (or form)
error, never a 5xx, and the database invariants hold afterwards.

Each endpoint's test draws a fixed number of examples, so that CI stays bounded:
the profile ``ci`` (the default) draws 60 per test, ``local`` draws 1,000
(``HYPOTHESIS_PROFILE=local bin/test tests/fuzz``). Every response is tallied by
endpoint and status code (``record_status``), and the tally is printed at the end of
the run: the counts before and after a fix are compared from it.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

# Examples share the test's database and fixtures: each example is one more request
# against the same state, as a fuzzer's would be, and the invariants are checked
# on what they leave behind.
_COMMON: dict[str, Any] = {
    "deadline": None,
    "derandomize": False,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    "database": None,
}
settings.register_profile("ci", max_examples=60, **_COMMON)
settings.register_profile("local", max_examples=1000, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

STATUS_TALLY: Counter[tuple[str, int]] = Counter()


def record_status(endpoint: str, status: int) -> None:
    """Count one fuzzed request's answer under its endpoint (``"POST /v1/chat/completions"``)."""
    STATUS_TALLY[(endpoint, status)] += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not STATUS_TALLY:
        return
    terminalreporter.section("fuzzed requests by endpoint and status")
    endpoints = sorted({endpoint for endpoint, _ in STATUS_TALLY})
    for endpoint in endpoints:
        counts = sorted(
            (status, count) for (name, status), count in STATUS_TALLY.items() if name == endpoint
        )
        total = sum(count for _, count in counts)
        by_status = ", ".join(f"{status}: {count}" for status, count in counts)
        terminalreporter.write_line(f"{endpoint}: {total} requests ({by_status})")


@pytest.fixture
def tally() -> Any:
    return record_status
