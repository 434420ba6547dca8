"""`GET /metrics`: the product's own metrics in Prometheus' text format.

Two kinds of metric, served together:

- **Counted as things happen**, in the process they happen in (an AI call's end in
  `routing.metrics`, a failed live update here, log records in `healthmon.metrics`):
  prometheus-client counters and histograms. With several processes (daphne and
  Celery in scale mode) each writes its own files under `PROMETHEUS_MULTIPROC_DIR`
  and the scrape adds them up (prometheus-client's multiprocess mode).
- **Read at scrape time** from the database (spend by budget, reservations held,
  runs, tasks, workers): each app registers a section (`register_section`) from its
  `AppConfig.ready()`, as it registers its part of Home, so the core imports no app
  above it. One collector runs them, in the process that answers the scrape only,
  so a database figure is exposed once however many processes there are.

Who may read it: with `METRICS_TOKEN` set, whoever presents it as a bearer token;
without one, direct connections from `METRICS_ALLOWED_NETWORKS` (loopback and the
private ranges by default). Anything else is refused with no data.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    Counter,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

# A scrape-time section: the metric families of one app, read from the database with
# a few aggregate queries (never one per row: a scrape comes every 15 s or so).
Section = Callable[[], Iterable[Metric]]

_sections: dict[str, Section] = {}

LIVE_PUBLISH_FAILURES = Counter(
    "controlplane_live_publish_failures_total",
    "Live updates not delivered to the channel layer (the page shows them on reload).",
    ["reason"],
)
# Both reasons exported from the start, so a rate() over them has a series at zero.
for _reason in ("failed", "dropped"):
    LIVE_PUBLISH_FAILURES.labels(_reason)


def count_publish_failure(reason: str) -> None:
    """A live update was lost: "failed" (the layer raised or timed out) or
    "dropped" (too many waiting for the layer)."""
    LIVE_PUBLISH_FAILURES.labels(reason).inc()


def register_section(name: str, section: Section) -> None:
    """Add an app's scrape-time metrics; registering a name again replaces it."""
    _sections[name] = section


class ScrapeTimeCollector:
    """Every registered section, run when a scrape asks."""

    def collect(self) -> Iterable[Metric]:
        for section in _sections.values():
            yield from section()

    def describe(self) -> Iterable[Metric]:
        # Without this the registry would run `collect` (the queries) to learn the
        # names at registration, possibly before the database is there.
        return []


def multiprocess_dir() -> str:
    return settings.PROMETHEUS_MULTIPROC_DIR


@functools.cache
def exposition_registry() -> CollectorRegistry:
    """What a scrape reads, built once per process.

    Multiprocess mode: every process's files (MultiProcessCollector), never this
    process's own registry (its counters are in those files already). Otherwise
    prometheus-client's default registry, which holds the counters and the process
    and Python metrics. The scrape-time collector is added to either, once."""
    directory = multiprocess_dir()
    if directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)
    else:
        registry = REGISTRY
    registry.register(ScrapeTimeCollector())
    return registry


def forget_dead_process(pid: int | None = None, **kwargs: Any) -> None:
    """Multiprocess bookkeeping when a process ends: its live gauges leave the sum
    (its counters stay: totals must not go down). Connected to Celery's
    `worker_process_shutdown` (a prefork child, which exits without `atexit`) and
    to `atexit` (daphne, a Celery main process)."""
    directory = multiprocess_dir()
    if directory:
        mark_process_dead(pid or os.getpid(), path=directory)


def connect_process_exit() -> None:
    import atexit

    from celery.signals import worker_process_shutdown

    worker_process_shutdown.connect(forget_dead_process, dispatch_uid="metrics-process-dead")
    atexit.register(forget_dead_process)


# Who may read the metrics.


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _expected_digest(configured: str) -> bytes:
    """METRICS_TOKEN holds the token, or `sha256:` and its hex digest so the
    environment need not hold the token itself."""
    if configured.startswith("sha256:"):
        try:
            return bytes.fromhex(configured.removeprefix("sha256:"))
        except ValueError:
            raise ImproperlyConfigured("METRICS_TOKEN: sha256: needs a hex digest") from None
    return _digest(configured)


def _presented_token(request: HttpRequest) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


@functools.cache
def _networks(
    configured: Sequence[str],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in configured)
    except ValueError as exc:
        raise ImproperlyConfigured(f"METRICS_ALLOWED_NETWORKS: {exc}") from None


# Headers a proxy adds: a request carrying one came through the load balancer, so its
# REMOTE_ADDR (the proxy's, often private) says nothing about who sent it.
_FORWARDED = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


def _internal(request: HttpRequest) -> bool:
    if any(name in request.headers for name in _FORWARDED):
        return False
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    allowed = _networks(tuple(settings.METRICS_ALLOWED_NETWORKS))
    return any(address in network for network in allowed)


def refusal(request: HttpRequest) -> HttpResponse | None:
    """Why this request may not read the metrics (401 or 403, no data); None if it may."""
    if settings.METRICS_TOKEN:
        presented = _presented_token(request)
        expected = _expected_digest(settings.METRICS_TOKEN)
        # Digests of equal length, compared in constant time.
        if presented is None or not hmac.compare_digest(_digest(presented), expected):
            response = HttpResponse("A valid metrics token is required.\n", status=401)
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
        return None
    if not _internal(request):
        return HttpResponse(
            "Metrics are served to internal addresses only (METRICS_ALLOWED_NETWORKS), "
            "or with METRICS_TOKEN.\n",
            status=403,
        )
    return None


@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    refused = refusal(request)
    if refused is not None:
        refused["Content-Type"] = "text/plain; charset=utf-8"
        return refused
    response = HttpResponse(
        generate_latest(exposition_registry()), content_type=CONTENT_TYPE_PLAIN_0_0_4
    )
    response["Cache-Control"] = "no-store"
    return response
