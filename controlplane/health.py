"""Probes of what the control plane depends on: database, channel layer, broker."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import asdict, dataclass

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection


@dataclass
class Probe:
    name: str
    ok: bool
    detail: str
    latency_ms: float

    def as_dict(self) -> dict:
        return asdict(self)


def _timed(name: str, check) -> Probe:
    started = time.perf_counter()
    try:
        detail = check()
        ok = True
    except Exception as exc:
        detail, ok = f"{type(exc).__name__}: {exc}", False
    return Probe(name, ok, detail, round((time.perf_counter() - started) * 1000, 2))


def _database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return connection.vendor


def _channel_layer() -> str:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer configured")

    async def round_trip() -> None:
        await asyncio.wait_for(_send_and_receive(), timeout=3)

    async def _send_and_receive() -> None:
        channel = await layer.new_channel("healthz.")
        nonce = uuid.uuid4().hex
        try:
            await layer.send(channel, {"type": "healthz", "nonce": nonce})
            message = await layer.receive(channel)
        finally:
            await _let_go(channel)
        if message.get("nonce") != nonce:
            raise RuntimeError("channel layer returned another message")

    async def _let_go(channel: str) -> None:
        """Layers have no call to drop a channel; Redis's pub/sub layer unsubscribes
        one when a receive on it is cancelled (else every probe would leave one)."""
        waiting = asyncio.ensure_future(layer.receive(channel))
        await asyncio.sleep(0)
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting

    async_to_sync(round_trip)()
    return type(layer).__name__


def _broker() -> str:
    if not settings.CELERY_BROKER_URL:
        return "in-process worker (embedded mode)"
    from controlplane.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
    return f"celery ({conn.transport_cls})"


def probe_all() -> list[Probe]:
    return [
        _timed("database", _database),
        _timed("channel_layer", _channel_layer),
        _timed("broker", _broker),
    ]
