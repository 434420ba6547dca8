"""The Health page's websocket: who may connect, the row fragments ingest's events
bring (a changed count replaces its row, a new fingerprint appears on top of its
service's table or brings its service), filters honoured, bursts coalesced.

Transactional tests: ingest publishes on commit, and the consumer reads the database
from other threads, which must see committed rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.db import connections

from controlplane.asgi import application
from controlplane.consumers import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED
from healthmon.consumers import HealthConsumer
from healthmon.models import Fingerprint
from healthmon.overview import service_anchor
from tests.controlplane.test_consumer import GOOD_ORIGIN, SITE_HOST, session_cookie
from tests.healthmon.health_data import ingest_lines, make_source
from tests.selfheal.test_consumer import ManualPace

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

HANG_GUARD = 30
TIMEOUT = "Payment gateway timed out after 30s for order 1234"


@pytest_asyncio.fixture(autouse=True)
async def _close_connections_of_the_sync_thread() -> AsyncIterator[None]:
    yield
    await sync_to_async(connections.close_all)()


class QuietConsumer(HealthConsumer):
    """Renders only for events (no catch-up look in the middle of a test)."""

    catch_up_seconds = 3600.0


class WatchedConsumer(QuietConsumer):
    pace_class = ManualPace
    opened: ClassVar[list[WatchedConsumer]] = []

    def groups_for(self) -> list[str]:
        self.heard = 0
        self.news = asyncio.Event()
        WatchedConsumer.opened.append(self)
        return super().groups_for()

    async def health_fingerprints(self, event: dict[str, Any]) -> None:
        await super().health_fingerprints(event)
        self.heard += 1
        self.news.set()

    async def hear(self, count: int) -> None:
        while self.heard < count:
            self.news.clear()
            await self.news.wait()


async def connect(user: Any, query: str = "", consumer: Any = QuietConsumer) -> Any:
    communicator = WebsocketCommunicator(consumer.as_asgi(), f"/ws/health/?{query}")
    communicator.scope["user"] = user
    connected, code = await communicator.connect(timeout=HANG_GUARD)
    return communicator, connected, code


async def receive_containing(communicator: Any, text: str) -> str:
    while True:
        html = await communicator.receive_from(timeout=HANG_GUARD)
        if text in html:
            return html


async def test_staff_connect_through_the_whole_stack(client: Any, observer: Any) -> None:
    cookie = await sync_to_async(session_cookie)(client, observer)
    communicator = WebsocketCommunicator(
        application,
        "/ws/health/",
        headers=[SITE_HOST, (b"origin", GOOD_ORIGIN), (b"cookie", cookie)],
    )
    connected, _ = await communicator.connect(timeout=HANG_GUARD)
    assert connected
    await communicator.disconnect()


@pytest.mark.parametrize("origin", [b"http://evil.example", b"http://localhost:9999"])
async def test_a_foreign_origin_is_refused_even_for_staff(
    client: Any, owner: Any, origin: bytes
) -> None:
    cookie = await sync_to_async(session_cookie)(client, owner)
    communicator = WebsocketCommunicator(
        application, "/ws/health/", headers=[SITE_HOST, (b"origin", origin), (b"cookie", cookie)]
    )
    connected, _ = await communicator.connect(timeout=HANG_GUARD)
    assert not connected


async def test_anonymous_visitors_and_outsiders_are_refused(outsider: Any) -> None:
    _, connected, code = await connect(AnonymousUser())
    assert not connected
    assert code == CLOSE_UNAUTHENTICATED
    _, connected, code = await connect(outsider)
    assert not connected
    assert code == CLOSE_FORBIDDEN


async def test_a_new_fingerprint_brings_its_service_and_a_new_count_replaces_its_row(
    observer: Any,
) -> None:
    source = await database_sync_to_async(make_source)()
    communicator, connected, _ = await connect(observer)
    assert connected

    first = await database_sync_to_async(ingest_lines)(source, TIMEOUT, 2)
    html = await receive_containing(communicator, f'id="fp-{first.pk}"')
    assert 'hx-swap-oob="beforeend:#health-services"' in html
    assert f'id="{service_anchor("shop")}"' in html
    assert f'id="fp-count-{first.pk}">2<' in html

    second = await database_sync_to_async(ingest_lines)(source, "Card <b>refused</b> for 77")
    html = await receive_containing(communicator, f'id="fp-{second.pk}"')
    assert f'hx-swap-oob="afterbegin:#{service_anchor("shop")}-rows"' in html
    assert "Card &lt;b&gt;refused&lt;/b&gt;" in html

    await database_sync_to_async(ingest_lines)(source, TIMEOUT, 3)
    html = await receive_containing(communicator, f'id="fp-count-{first.pk}">5<')
    assert f'<tr id="fp-{first.pk}"' in html
    assert 'hx-swap-oob="true"' in html
    await communicator.disconnect()


async def test_a_row_the_page_already_shows_is_replaced_in_place(observer: Any) -> None:
    source = await database_sync_to_async(make_source)()
    shown = await database_sync_to_async(ingest_lines)(source, TIMEOUT, 1)
    communicator, _, _ = await connect(observer)

    await database_sync_to_async(ingest_lines)(source, TIMEOUT, 1)

    html = await receive_containing(communicator, f'id="fp-{shown.pk}"')
    assert html.lstrip().startswith(f'<tr id="fp-{shown.pk}"')
    assert f'id="fp-count-{shown.pk}">2<' in html
    await communicator.disconnect()


async def test_a_page_filtered_to_one_service_gets_only_its_rows(observer: Any) -> None:
    shop = await database_sync_to_async(make_source)()
    billing = await database_sync_to_async(make_source)("billing-file", "billing")
    communicator, _, _ = await connect(observer, "service=billing&level=error")

    await database_sync_to_async(ingest_lines)(shop, TIMEOUT)
    invoice = await database_sync_to_async(ingest_lines)(billing, "Invoice 5 failed to render")

    # The shop's event came first: had it rendered anything, it would be first here.
    first = await communicator.receive_from(timeout=HANG_GUARD)
    assert f'id="fp-{invoice.pk}"' in first
    assert service_anchor("shop") not in first
    await communicator.disconnect()


async def test_a_burst_of_ingests_is_rendered_a_few_times_not_once_each(observer: Any) -> None:
    source = await database_sync_to_async(make_source)()
    await database_sync_to_async(ingest_lines)(source, TIMEOUT)
    WatchedConsumer.opened.clear()
    communicator, _, _ = await connect(observer, consumer=WatchedConsumer)
    (consumer,) = WatchedConsumer.opened

    def burst() -> None:
        for _ in range(30):
            ingest_lines(source, TIMEOUT)

    await database_sync_to_async(burst)()
    await asyncio.wait_for(consumer.hear(30), HANG_GUARD)

    frames = [await communicator.receive_from(timeout=HANG_GUARD)]
    while consumer.dirty:
        await asyncio.wait_for(consumer.pace.waiting.wait(), HANG_GUARD)
        consumer.pace.advance()
        frames.append(await communicator.receive_from(timeout=HANG_GUARD))
    assert consumer.flusher is not None
    await asyncio.wait_for(consumer.flusher, HANG_GUARD)
    assert len(frames) <= 2
    fingerprint = await database_sync_to_async(Fingerprint.objects.get)()
    assert f'id="fp-count-{fingerprint.pk}">31<' in frames[-1]
    await communicator.disconnect()


class EagerCatchUp(HealthConsumer):
    catch_up_seconds = 0.05


async def test_fingerprints_whose_event_was_lost_still_arrive(observer: Any, monkeypatch) -> None:
    from controlplane import live

    source = await database_sync_to_async(make_source)()
    communicator, _, _ = await connect(observer, consumer=EagerCatchUp)
    monkeypatch.setattr(live, "_send", lambda group, message: None)  # the layer lost it

    lost = await database_sync_to_async(ingest_lines)(source, TIMEOUT, 4)

    html = await receive_containing(communicator, f'id="fp-{lost.pk}"')
    assert f'id="fp-count-{lost.pk}">4<' in html
    await communicator.disconnect()


async def test_a_row_that_no_longer_matches_the_page_leaves_it(
    observer: Any, operator: Any
) -> None:
    from healthmon import fingerprint_states

    source = await database_sync_to_async(make_source)()
    shown = await database_sync_to_async(ingest_lines)(source, TIMEOUT, 1)
    communicator, _, _ = await connect(observer, "status=unresolved")

    await database_sync_to_async(fingerprint_states.resolve)(shown, actor=operator)

    html = await receive_containing(communicator, f'id="fp-{shown.pk}"')
    assert 'hx-swap-oob="delete"' in html
    await communicator.disconnect()


async def test_a_state_change_updates_the_row_on_an_unfiltered_page(
    observer: Any, operator: Any
) -> None:
    from healthmon import fingerprint_states

    source = await database_sync_to_async(make_source)()
    shown = await database_sync_to_async(ingest_lines)(source, TIMEOUT, 1)
    communicator, _, _ = await connect(observer)

    await database_sync_to_async(fingerprint_states.resolve)(shown, actor=operator)

    html = await receive_containing(communicator, f'id="fp-{shown.pk}"')
    assert 'class="fp-status status-resolved"' in html
    await communicator.disconnect()
