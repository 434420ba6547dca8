"""The Self-heal websocket: who may connect, the fragments each page receives, and
bursts coalesced into a few renders.

Transactional tests: `publish()` sends on commit, and the consumer reads the
database from other threads, which must see committed rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.db import connections

from controlplane.asgi import application
from controlplane.consumers import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED
from selfheal import engine
from selfheal.consumers import SelfhealConsumer
from selfheal.models import Task, TaskStatus
from selfheal.playbooks import run_playbook
from tests.controlplane.test_consumer import GOOD_ORIGIN, session_cookie
from tests.selfheal import make_task

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest_asyncio.fixture(autouse=True)
async def _close_connections_of_the_sync_thread() -> AsyncIterator[None]:
    yield
    await sync_to_async(connections.close_all)()


async def connect(user: Any, page: str = "engine") -> Any:
    communicator = WebsocketCommunicator(SelfhealConsumer.as_asgi(), f"/ws/selfheal/?page={page}")
    communicator.scope["user"] = user
    connected, code = await communicator.connect()
    return communicator, connected, code


async def receive_containing(communicator: Any, text: str, timeout: float = 5) -> str:
    while True:
        html = await communicator.receive_from(timeout=timeout)
        if text in html:
            return html


async def test_staff_connect_through_the_whole_stack(client: Any, observer: Any) -> None:
    cookie = await sync_to_async(session_cookie)(client, observer)
    communicator = WebsocketCommunicator(
        application,
        "/ws/selfheal/?page=engine",
        headers=[(b"origin", GOOD_ORIGIN), (b"cookie", cookie)],
    )

    connected, _ = await communicator.connect()

    assert connected
    await communicator.disconnect()


async def test_anonymous_visitors_are_refused(db: Any) -> None:
    _, connected, code = await connect(AnonymousUser())

    assert not connected
    assert code == CLOSE_UNAUTHENTICATED


async def test_an_outsider_is_refused(outsider: Any) -> None:
    _, connected, code = await connect(outsider)

    assert not connected
    assert code == CLOSE_FORBIDDEN


async def test_a_new_task_updates_the_engine_queue_counts(observer: Any) -> None:
    communicator, connected, _ = await connect(observer)
    assert connected

    await database_sync_to_async(make_task)("Rotate <the> keys")

    html = await receive_containing(communicator, 'id="engine-queue"')
    assert 'hx-swap-oob="true"' in html
    assert 'id="queue-count-pending">1<' in html
    assert 'id="engine-workers"' in html
    assert 'id="engine-attention"' in html
    await communicator.disconnect()


async def test_a_blocked_task_appears_with_buttons_for_an_operator_only(
    observer: Any, operator: Any
) -> None:
    watching, _, _ = await connect(observer)
    acting, _, _ = await connect(operator)

    def block() -> Task:
        task = engine.create_task("Needs <disk>", "noop")
        return engine.transition(task, TaskStatus.BLOCKED, reason="<no> disk")

    task = await database_sync_to_async(block)()

    seen = await receive_containing(watching, f'id="task-{task.pk}"')
    assert "&lt;no&gt; disk" in seen
    assert "<no>" not in seen
    assert "retry-button" not in seen
    operated = await receive_containing(acting, f'id="task-{task.pk}"')
    assert "retry-button" in operated
    assert f'hx-post="/selfheal/tasks/{task.pk}/retry/"' in operated
    await watching.disconnect()
    await acting.disconnect()


async def test_a_diagnosis_updates_the_report_and_history(observer: Any, operator: Any) -> None:
    communicator, connected, _ = await connect(observer, page="index")
    assert connected

    execution = await database_sync_to_async(run_playbook)("diagnose", user=operator)

    html = await receive_containing(communicator, f'id="execution-{execution.pk}"')
    assert 'id="selfheal-report"' in html
    assert f"sev-{execution.worst_severity}" in html
    assert 'id="selfheal-history"' in html
    await communicator.disconnect()


async def test_each_page_receives_only_its_own_fragments(observer: Any, operator: Any) -> None:
    index, _, _ = await connect(observer, page="index")
    engine_page, _, _ = await connect(observer, page="engine")

    await database_sync_to_async(make_task)("engine only")
    await receive_containing(engine_page, 'id="engine-queue"')
    assert await index.receive_nothing(timeout=0.8)

    await database_sync_to_async(run_playbook)("diagnose", user=operator)
    await receive_containing(index, 'id="selfheal-report"')
    await index.disconnect()
    await engine_page.disconnect()


async def test_a_burst_of_changes_is_rendered_a_few_times_not_once_each(observer: Any) -> None:
    communicator, connected, _ = await connect(observer)
    assert connected

    def burst() -> None:
        for n in range(60):
            engine.create_task(f"burst {n}", "noop")

    await database_sync_to_async(burst)()

    frames = [await communicator.receive_from(timeout=5)]
    while not await communicator.receive_nothing(timeout=1.5):
        frames.append(await communicator.receive_from())
    assert 1 <= len(frames) <= 10
    # The last render covers every change of the burst.
    assert 'id="queue-count-pending">60<' in frames[-1]
    await communicator.disconnect()


async def test_closing_the_socket_stops_a_pending_render(observer: Any) -> None:
    communicator, connected, _ = await connect(observer)
    assert connected
    await database_sync_to_async(make_task)("first")
    await receive_containing(communicator, 'id="engine-queue"')

    await database_sync_to_async(make_task)("second")  # due after the interval
    await communicator.disconnect()

    await asyncio.sleep(0.7)  # nothing raises from a cancelled render
