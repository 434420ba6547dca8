"""Home's websocket: each card re-rendered, whole and swapped out of band, when what
it shows changes: a run, a task, a diagnosis, an error fingerprint, a code report.

Transactional tests: producers publish on commit, and the consumer reads the
database from other threads, which must see committed rows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.utils import timezone

from chat.models import ChatSession
from chat.runs import open_run
from controlplane.home.consumer import HomeConsumer
from healthmon.models import CodeReport
from selfheal import engine
from selfheal.engine import ENGINE_GROUP
from selfheal.models import PlaybookExecution, TaskStatus
from selfheal.playbooks.events import publish_execution
from tests.healthmon.health_data import ingest_lines, make_source
from tests.selfheal import make_task

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest_asyncio.fixture(autouse=True)
async def _close_connections_of_the_sync_thread() -> AsyncIterator[None]:
    yield
    await sync_to_async(connections.close_all)()


async def connect(user: Any) -> Any:
    communicator = WebsocketCommunicator(HomeConsumer.as_asgi(), "/ws/home/")
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def card_containing(communicator: Any, card_id: str, text: str) -> str:
    """The first `card_id` card sent that contains `text` (earlier frames may come
    first). The receive timeout only keeps a broken test from hanging."""
    while True:
        html = await communicator.receive_from(timeout=60)
        start = html.find(f'<section id="{card_id}"')
        if start < 0:
            continue
        section = html[start : html.index("</section>", start)]
        if text in section:
            assert 'hx-swap-oob="true"' in section[: section.index(">")]
            return section


async def test_a_run_opened_elsewhere_appears_on_the_runs_card(
    observer: Any, operator: Any
) -> None:
    communicator = await connect(observer)

    def open_one() -> Any:
        chat = ChatSession.objects.create(user=operator, title="Numbers")
        return open_run(chat, user=operator, message="How full is the queue?", mode="normal")

    run = await database_sync_to_async(open_one)()

    runs = await card_containing(communicator, "home-runs", f'id="home-run-{run.pk}"')
    assert "Idle" in runs
    await communicator.disconnect()


async def test_a_task_that_gets_blocked_shows_as_waiting_on_the_engine_card(
    observer: Any,
) -> None:
    communicator = await connect(observer)

    def block() -> Any:
        return engine.transition(
            make_task("Reindex"), TaskStatus.BLOCKED, reason="The <search> cluster is down"
        )

    task = await database_sync_to_async(block)()

    card = await card_containing(communicator, "home-engine", f'id="home-task-{task.pk}"')
    assert "The &lt;search&gt; cluster is down" in card
    assert 'id="attention-count">1<' in card
    await communicator.disconnect()


async def test_a_critical_diagnosis_turns_system_health_critical(observer: Any) -> None:
    communicator = await connect(observer)

    def diagnose() -> None:
        execution = PlaybookExecution.objects.create(
            playbook="diagnose",
            status=PlaybookExecution.Status.SUCCEEDED,
            findings=[{"check": "task_queue", "severity": "critical", "summary": "Stuck."}],
        )
        publish_execution(execution)

    await database_sync_to_async(diagnose)()

    health = await card_containing(
        communicator, "system-health", 'id="system-health-severity">critical<'
    )
    assert "Needs attention now." in health
    await communicator.disconnect()


async def test_a_new_error_fingerprint_appears_on_the_errors_card(observer: Any) -> None:
    communicator = await connect(observer)

    def ingest() -> Any:
        return ingest_lines(make_source(), "Payment gateway timed out for order 1234", 2)

    fingerprint = await database_sync_to_async(ingest)()

    errors = await card_containing(
        communicator, "home-errors", f'id="home-fingerprint-{fingerprint.pk}"'
    )
    assert 'id="open-errors">1<' in errors
    await communicator.disconnect()


async def test_a_new_code_health_report_appears_on_its_card(observer: Any) -> None:
    communicator = await connect(observer)

    def report() -> CodeReport:
        now = timezone.now()
        return CodeReport.objects.create(
            trigger=CodeReport.Trigger.ON_DEMAND,
            period_start=now - timedelta(days=7),
            period_end=now,
            subject="Code health: 2 new",
        )

    made = await database_sync_to_async(report)()

    await card_containing(communicator, "home-code-health", f"/health/code/reports/{made.pk}/")
    await communicator.disconnect()


async def test_an_event_home_does_not_show_leaves_the_socket_open(observer: Any) -> None:
    communicator = await connect(observer)
    layer = get_channel_layer()

    await layer.group_send(ENGINE_GROUP, {"type": "engine.something_new", "id": 1})
    task = await database_sync_to_async(make_task)("After the unknown event")

    await card_containing(communicator, "home-engine", "After the unknown event")
    assert task.status == TaskStatus.PENDING
    await communicator.disconnect()


async def test_the_cards_that_age_are_rendered_again_without_an_event(observer: Any) -> None:
    class Quick(HomeConsumer):
        catch_up_seconds = 0.01

    communicator = WebsocketCommunicator(Quick.as_asgi(), "/ws/home/")
    communicator.scope["user"] = observer
    connected, _ = await communicator.connect()
    assert connected

    html = await communicator.receive_from(timeout=60)

    assert '<section id="home-engine"' in html
    assert '<section id="home-spend"' in html
    assert '<section id="recent-audit"' not in html
    await communicator.disconnect()
