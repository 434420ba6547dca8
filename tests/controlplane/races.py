"""Two pieces of work started at the same moment, each in its own thread (and so on
its own database connection), for the tests where exactly one may win."""

from __future__ import annotations

import threading
from collections.abc import Callable

from django.db import connection

from tests.controlplane.test_background import HANG_GUARD_SECONDS


def at_once(*works: Callable[[], str]) -> list[str]:
    """What each work returned (in the order they finished); a work that raised
    gives "crashed: ..." so the test's assertions show it."""
    barrier = threading.Barrier(len(works))
    outcomes: list[str] = []

    def run(work: Callable[[], str]) -> None:
        try:
            barrier.wait(timeout=HANG_GUARD_SECONDS)
            outcomes.append(work())
        except Exception as exc:
            outcomes.append(f"crashed: {exc!r}")
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(work,)) for work in works]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=HANG_GUARD_SECONDS)
    return outcomes
