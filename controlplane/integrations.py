"""What each integration kind needs: its connection test.

The core declares the kinds (`Integration.Kind`); the app that uses a kind registers
its connection test from its `AppConfig.ready()` (healthmon registers Railway's), so
the core never imports an app above it:

    register_connection_test(Integration.Kind.RAILWAY, test_railway)

A test gets the integration and returns a `ConnectionResult`; it raises nothing a
person could not read (a failure is a result with `ok=False` and the reason).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.utils import timezone

from controlplane.models import Integration


@dataclass(frozen=True)
class ConnectionResult:
    ok: bool
    message: str


ConnectionTest = Callable[[Integration], ConnectionResult]

_tests: dict[str, ConnectionTest] = {}


def register_connection_test(kind: str, test: ConnectionTest) -> None:
    _tests[kind] = test


def check_connection(integration: Integration) -> ConnectionResult:
    """Run the kind's connection test and keep its result and time on the row."""
    test = _tests.get(integration.kind)
    if test is None:
        result = ConnectionResult(False, f"No connection test for {integration.kind}.")
    else:
        try:
            result = test(integration)
        except Exception as exc:  # a test must never break the page that ran it
            result = ConnectionResult(False, f"The test failed: {exc}")
    integration.last_tested_at = timezone.now()
    integration.last_test_ok = result.ok
    integration.last_test_message = result.message[:2000]
    Integration._base_manager.filter(pk=integration.pk).update(
        last_tested_at=integration.last_tested_at,
        last_test_ok=result.ok,
        last_test_message=integration.last_test_message,
    )
    return result
