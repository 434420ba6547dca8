"""The Routing page's websocket: its spend and usage figures re-rendered, whole and
swapped out of band, when a call is recorded (Home's `home.spend` event), for the
range the page shows; other events of Home's group leave it as it is.

Transactional tests: the consumer reads the database from other threads, which must
see committed rows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.db import connections
from django.utils import timezone

from controlplane.consumers import CLOSE_UNAUTHENTICATED
from controlplane.live import HOME_GROUP
from routing.consumers import RoutingConsumer
from routing.models import OperationLog

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest_asyncio.fixture(autouse=True)
async def _close_connections_of_the_sync_thread() -> AsyncIterator[None]:
    yield
    await sync_to_async(connections.close_all)()


async def connect(user: Any, path: str = "/ws/routing/?range=24h") -> Any:
    communicator = WebsocketCommunicator(RoutingConsumer.as_asgi(), path)
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    assert connected
    return communicator


def record_call(cost: str, operation: str = "summarize") -> None:
    OperationLog.objects.create(
        request_id=f"call-{timezone.now().timestamp()}",
        operation=operation,
        model_used="offline-model",
        status=OperationLog.Status.OK,
        cost=Decimal(cost),
        latency_ms=120,
    )


async def usage_containing(communicator: Any, text: str) -> str:
    """The first usage fragment sent that contains `text` (earlier frames may come
    first). The receive timeout only keeps a broken test from hanging."""
    while True:
        html = await communicator.receive_from(timeout=60)
        assert html.startswith('<div id="routing-usage" class="grid-part" hx-swap-oob="true">')
        if text in html:
            return html


async def test_a_recorded_call_updates_the_spend_and_breakdowns(observer: Any) -> None:
    communicator = await connect(observer)

    await database_sync_to_async(record_call)("0.25", operation="nightly-digest")
    await get_channel_layer().group_send(HOME_GROUP, {"type": "home.spend"})

    html = await usage_containing(communicator, "nightly-digest")
    assert "Spend, last 24 hours:" in html
    assert "over 1 call<" in html
    assert "offline-model" in html  # the model mix and the quality table
    await communicator.disconnect()


async def test_the_page_range_is_the_one_rendered(observer: Any) -> None:
    communicator = await connect(observer, "/ws/routing/?range=30d")

    await database_sync_to_async(record_call)("0.10")
    await get_channel_layer().group_send(HOME_GROUP, {"type": "home.spend"})

    html = await usage_containing(communicator, "Spend, last 30 days:")
    assert "Spend, last 24 hours" not in html
    await communicator.disconnect()


async def test_other_events_of_homes_group_leave_the_socket_open(observer: Any) -> None:
    communicator = await connect(observer)
    layer = get_channel_layer()

    await layer.group_send(HOME_GROUP, {"type": "home.runs"})
    await layer.group_send(HOME_GROUP, {"type": "home.audit"})
    await database_sync_to_async(record_call)("0.40", operation="after-other-events")
    await layer.group_send(HOME_GROUP, {"type": "home.spend"})

    # The first figures it sends are the call's: the other events rendered nothing.
    html = await communicator.receive_from(timeout=60)
    assert "after-other-events" in html
    await communicator.disconnect()


async def test_the_figures_are_rendered_again_without_an_event(observer: Any) -> None:
    class Quick(RoutingConsumer):
        catch_up_seconds = 0.01

    communicator = WebsocketCommunicator(Quick.as_asgi(), "/ws/routing/?range=24h")
    communicator.scope["user"] = observer
    connected, _ = await communicator.connect()
    assert connected
    await database_sync_to_async(record_call)("0.30", operation="rolled-up-later")

    await usage_containing(communicator, "rolled-up-later")
    await communicator.disconnect()


async def test_anonymous_visitors_are_refused() -> None:
    communicator = WebsocketCommunicator(RoutingConsumer.as_asgi(), "/ws/routing/")
    communicator.scope["user"] = AnonymousUser()

    connected, code = await communicator.connect()

    assert not connected
    assert code == CLOSE_UNAUTHENTICATED
