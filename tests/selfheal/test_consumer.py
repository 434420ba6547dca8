"""The Self-heal websocket: who may connect, the fragments each page receives, and
bursts coalesced into a few renders.

Transactional tests: `publish()` sends on commit, and the consumer reads the
database from other threads, which must see committed rows. The coalescing tests
give the consumer a pace they advance by hand, so what they see does not depend on
how fast the machine is.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any, ClassVar

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.db import connections

from controlplane.asgi import application
from controlplane.consumers import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED, RenderPace
from selfheal import engine
from selfheal.consumers import SelfhealConsumer
from selfheal.models import Task, TaskStatus
from selfheal.playbooks import run_playbook
from tests.controlplane.test_consumer import GOOD_ORIGIN, SITE_HOST, session_cookie
from tests.selfheal import make_task

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest_asyncio.fixture(autouse=True)
async def _close_connections_of_the_sync_thread() -> AsyncIterator[None]:
    yield
    await sync_to_async(connections.close_all)()


# Only against hanging for ever when something is broken; nothing waits this long.
HANG_GUARD = 30


class ManualPace(RenderPace):
    """The first render at once, as on a fresh connection; each later one only when
    the test calls `advance()`."""

    def __init__(self) -> None:
        super().__init__()
        self.turns = 0
        self.waiting = asyncio.Event()
        self.go = asyncio.Event()

    async def wait_turn(self) -> None:
        self.turns += 1
        if self.turns == 1:
            return
        self.waiting.set()
        await self.go.wait()
        self.go.clear()
        self.waiting.clear()

    def advance(self) -> None:
        self.go.set()


class WatchedConsumer(SelfhealConsumer):
    """The consumer with a hand-driven pace, counting what it hears and sends."""

    pace_class = ManualPace
    opened: ClassVar[list[WatchedConsumer]] = []

    def groups_for(self) -> list[str]:
        self.heard = 0
        self.sent = 0
        self.news = asyncio.Event()
        WatchedConsumer.opened.append(self)
        return super().groups_for()

    async def engine_changed(self, event: dict[str, Any]) -> None:
        await super().engine_changed(event)
        self.heard += 1
        self.news.set()

    async def send(
        self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False
    ) -> None:
        self.sent += 1
        await super().send(text_data=text_data, bytes_data=bytes_data, close=close)

    async def hear(self, count: int) -> None:
        """Until `count` engine changes have arrived."""
        while self.heard < count:
            self.news.clear()
            await self.news.wait()


async def guarded[T](step: Awaitable[T]) -> T:
    return await asyncio.wait_for(step, timeout=HANG_GUARD)


async def connect(user: Any, page: str = "engine", consumer: Any = SelfhealConsumer) -> Any:
    communicator = WebsocketCommunicator(consumer.as_asgi(), f"/ws/selfheal/?page={page}")
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
        headers=[SITE_HOST, (b"origin", GOOD_ORIGIN), (b"cookie", cookie)],
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
    await database_sync_to_async(run_playbook)("diagnose", user=operator)

    # The task's change reached the index page first: had it rendered anything for
    # it, that would be the first thing the page receives.
    first = await index.receive_from(timeout=HANG_GUARD)
    assert 'id="selfheal-report"' in first
    assert 'id="engine-queue"' not in first
    await index.disconnect()
    await engine_page.disconnect()


async def connect_watched(user: Any) -> tuple[Any, WatchedConsumer]:
    WatchedConsumer.opened.clear()
    communicator, connected, _ = await connect(user, consumer=WatchedConsumer)
    assert connected
    (consumer,) = WatchedConsumer.opened
    return communicator, consumer


async def test_a_burst_of_changes_is_rendered_a_few_times_not_once_each(observer: Any) -> None:
    communicator, consumer = await connect_watched(observer)

    def burst() -> None:
        for n in range(60):
            engine.create_task(f"burst {n}", "noop")

    await database_sync_to_async(burst)()
    await guarded(consumer.hear(60))

    # The first change renders at once; all that arrive meanwhile wait for one more
    # render at the connection's next turn.
    frames = [await communicator.receive_from(timeout=HANG_GUARD)]
    while consumer.dirty:
        await guarded(consumer.pace.waiting.wait())
        consumer.pace.advance()
        frames.append(await communicator.receive_from(timeout=HANG_GUARD))
    assert consumer.flusher is not None
    await guarded(consumer.flusher)
    assert len(frames) <= 2
    assert consumer.sent == len(frames)
    # The last render covers every change of the burst.
    assert 'id="queue-count-pending">60<' in frames[-1]
    await communicator.disconnect()


async def test_closing_the_socket_stops_a_pending_render(observer: Any) -> None:
    communicator, consumer = await connect_watched(observer)
    await database_sync_to_async(make_task)("first")
    await receive_containing(communicator, 'id="engine-queue"')
    await database_sync_to_async(make_task)("second")
    await guarded(consumer.pace.waiting.wait())  # its render waits for the next turn
    pending = consumer.flusher
    assert pending is not None

    await communicator.disconnect()
    consumer.pace.advance()  # the turn comes, after the close

    with pytest.raises(asyncio.CancelledError):
        await guarded(pending)
    assert pending.cancelled()
    assert consumer.sent == 1  # only the first render went out


async def test_the_task_list_re_renders_with_the_filter_of_the_page(observer: Any) -> None:
    communicator = WebsocketCommunicator(
        SelfhealConsumer.as_asgi(), "/ws/selfheal/?page=engine&kind=echo"
    )
    communicator.scope["user"] = observer
    connected, _ = await communicator.connect()
    assert connected

    def create() -> tuple[Task, Task]:
        # The other kind first: once the echo task is listed, it exists too.
        other = engine.create_task("Not me", "noop")
        return engine.create_task("Echo me", "echo"), other

    echo, other = await database_sync_to_async(create)()

    html = await receive_containing(communicator, f'id="task-{echo.pk}"')
    listed = html[html.index('id="engine-tasks"') :]
    assert f'id="task-{other.pk}"' not in listed
    assert '<option value="echo" selected>echo</option>' in listed
    await communicator.disconnect()
