"""The long-lived threads the `/v1` endpoints run their synchronous work on.

Django under ASGI hands each request to a fresh thread that opens (and closes) its
own database connection. The endpoints' work runs instead on a small pool of
threads (`GATEWAY_THREADS`) that keep their database connection between requests;
a pooled PostgreSQL connection goes back to its pool after each request instead,
and one that failed is closed.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import connections

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


async def run_on_pool[R](function: Callable[[], R]) -> R:
    """Run `function` on one of the endpoint threads and wait for its result."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor(), functools.partial(in_pool, function))


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(settings.GATEWAY_THREADS, thread_name_prefix="gateway")
        return _pool


def in_pool[R](function: Callable[[], R]) -> R:
    """Run one step of a request on a pool thread, then tidy its database connections:
    kept open for the next request, except pooled ones (back to their pool) and any
    that failed (closed; the next request opens a fresh one)."""
    failed = True
    try:
        result = function()
        failed = False
        return result
    finally:
        for connection in connections.all(initialized_only=True):
            pooled = getattr(connection, "pool", None) is not None
            if failed or pooled or connection.errors_occurred:
                connection.close()
