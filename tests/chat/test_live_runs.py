"""The chat pages' own sockets: a session page's Runs sidebar and the chat index's
"Running now" and last-run chips follow the runs' status as it changes.

Transactional tests: the announcement is published on commit, and the consumers
read the database from other threads, which must see committed rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.db import connections, transaction

from chat.live_runs import announce_run
from chat.models import ChatSession, Message, Run, RunStatus
from chat.runs import request_stop
from controlplane.asgi_routes import websocket_urlpatterns
from controlplane.consumers import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

# Only keeps a broken test from hanging: every wait is for a frame that must come.
HANG_GUARD_SECONDS = 30

OPEN: list[WebsocketCommunicator] = []


@pytest_asyncio.fixture(autouse=True)
async def _clean_up_after_each_test() -> AsyncIterator[None]:
    yield
    while OPEN:
        with contextlib.suppress(Exception):
            await OPEN.pop().disconnect()
    channel_layers.backends.clear()
    await sync_to_async(connections.close_all)()


async def connect(user: Any, path: str) -> tuple[WebsocketCommunicator, bool, Any]:
    communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), path)
    communicator.scope["user"] = user
    OPEN.append(communicator)
    connected, code = await communicator.connect()
    return communicator, connected, code


def a_run(user: Any, title: str = "Ops chat", message: str = "How full is the queue?") -> Run:
    chat = ChatSession.objects.create(user=user, title=title)
    run = Run.objects.create(
        session=chat,
        started_by=user,
        mode="normal",
        max_steps=10,
        max_wall_clock_seconds=300,
        max_cost=Decimal("0.50"),
    )
    Message.objects.create(session=chat, run=run, role=Message.Role.USER, content=message)
    return run


def created(run: Run) -> None:
    with transaction.atomic():
        announce_run(run.pk, run.session_id, run.status, "", created=True)


async def test_only_staff_may_watch_a_session_or_the_index(outsider: Any, owner: Any) -> None:
    run = await database_sync_to_async(a_run)(owner)

    for path in (f"/ws/chat/sessions/{run.session_id}/", "/ws/chat/sessions/"):
        _, connected, code = await connect(AnonymousUser(), path)
        assert (connected, code) == (False, CLOSE_UNAUTHENTICATED)
        _, connected, code = await connect(outsider, path)
        assert (connected, code) == (False, CLOSE_FORBIDDEN)


async def test_a_run_that_stops_changes_its_chip_in_the_sessions_sidebar(
    observer: Any, operator: Any
) -> None:
    run = await database_sync_to_async(a_run)(operator)
    socket, connected, _ = await connect(observer, f"/ws/chat/sessions/{run.session_id}/")
    assert connected

    await database_sync_to_async(request_stop)(run, user=operator)  # queued: stops at once

    html = await socket.receive_from(timeout=HANG_GUARD_SECONDS)
    assert f'<span id="run-{run.pk}-chip" class="run-chip" hx-swap-oob="true">' in html
    assert '<span class="status-chip status-stopped">Stopped</span>' in html
    assert "Stopped by a person" in html
    assert 'id="run-history"' not in html  # a known run: its chip, not the whole sidebar


async def test_another_sessions_run_is_not_sent_to_this_session(operator: Any) -> None:
    mine = await database_sync_to_async(a_run)(operator)
    other = await database_sync_to_async(a_run)(operator, title="Other")
    socket, _, _ = await connect(operator, f"/ws/chat/sessions/{mine.session_id}/")

    await database_sync_to_async(request_stop)(other, user=operator)
    await database_sync_to_async(request_stop)(mine, user=operator)

    html = await socket.receive_from(timeout=HANG_GUARD_SECONDS)
    assert f'id="run-{mine.pk}-chip"' in html
    assert f'id="run-{other.pk}-chip"' not in html


async def test_a_new_run_puts_the_sidebar_back_with_it_on_top(operator: Any) -> None:
    first = await database_sync_to_async(a_run)(operator)
    socket, _, _ = await connect(operator, f"/ws/chat/sessions/{first.session_id}/")

    def second_run() -> Run:
        run = Run.objects.create(
            session_id=first.session_id,
            started_by=operator,
            mode="code",
            max_steps=10,
            max_wall_clock_seconds=300,
            max_cost=Decimal("0.50"),
        )
        Message.objects.create(
            session_id=first.session_id, run=run, role=Message.Role.USER, content="Again <b>"
        )
        created(run)
        return run

    second = await database_sync_to_async(second_run)()

    html = await socket.receive_from(timeout=HANG_GUARD_SECONDS)
    assert '<section class="card run-history" id="run-history" hx-swap-oob="true">' in html
    assert html.index(f'id="run-row-{second.pk}"') < html.index(f'id="run-row-{first.pk}"')
    assert "Again &lt;b&gt;" in html
    assert '<span class="status-chip status-idle">Idle</span>' in html


async def test_the_index_shows_whats_running_now_and_each_sessions_last_run_live(
    observer: Any, operator: Any
) -> None:
    stopping = await database_sync_to_async(a_run)(operator, title="Stops")
    queued = await database_sync_to_async(a_run)(operator, title="Still queued")
    socket, connected, _ = await connect(observer, "/ws/chat/sessions/")
    assert connected

    await database_sync_to_async(request_stop)(stopping, user=operator)

    html = await socket.receive_from(timeout=HANG_GUARD_SECONDS)
    last_run = f'<span id="session-{stopping.session_id}-last-run" hx-swap-oob="true">'
    assert last_run in html
    assert "Stopped by a person" in html
    assert '<section class="card wide running-now" id="running-now" hx-swap-oob="true">' in html
    assert f'id="running-{queued.pk}"' in html  # still queued: still running now
    assert f'id="running-{stopping.pk}"' not in html  # stopped: gone from it
    assert '<span class="badge" id="running-now-count">1</span>' in html


async def test_the_status_chips_say_waiting_for_approval_in_sentence_case(operator: Any) -> None:
    run = await database_sync_to_async(a_run)(operator)
    socket, _, _ = await connect(operator, "/ws/chat/sessions/")

    def paused() -> None:
        Run.objects.filter(pk=run.pk).update(status=RunStatus.WAITING_APPROVAL)
        with transaction.atomic():
            announce_run(run.pk, run.session_id, RunStatus.WAITING_APPROVAL, "awaiting_approval")

    await database_sync_to_async(paused)()

    html = await socket.receive_from(timeout=HANG_GUARD_SECONDS)
    assert "Waiting for approval</span>" in html
    assert "Waiting For Approval" not in html
    assert "waiting_approval</span>" not in html
