"""The run websocket: who may connect, the fragments it sends, and replay on reconnect.

Transactional tests: `emit()` publishes on commit, and the consumer reads the
database from other threads, which must see committed rows.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import channel_layers, get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db import connections

from chat.consumers import CLOSE_NOT_FOUND, after_seq
from chat.events import emit, emit_many, events_message, run_group
from chat.models import Run, StreamEvent
from controlplane.asgi import application
from controlplane.asgi_routes import websocket_urlpatterns
from controlplane.consumers import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED
from tests.chat.runs import make_run
from tests.controlplane.test_consumer import SITE_HOST

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

GOOD_ORIGIN = b"http://localhost:8000"
TOKEN = re.compile(r'<span hx-swap-oob="beforeend:#run-reply">(.*?)</span>', re.S)
LAST_SEQ = re.compile(r'id="run-last-seq" data-seq="(\d+)"')


OPEN: list[WebsocketCommunicator] = []


@pytest_asyncio.fixture(autouse=True)
async def _clean_up_after_each_test() -> AsyncIterator[None]:
    yield
    # Every socket closed and a fresh channel layer for the next test: a consumer
    # left waiting on a Redis layer would tie that layer to this test's event loop
    # (whose connections channels_redis closes when the loop closes).
    while OPEN:
        with contextlib.suppress(Exception):  # some were closed by the consumer already
            await OPEN.pop().disconnect()
    channel_layers.backends.clear()
    # The ORM calls of these tests run in asgiref's sync thread, whose persistent
    # connections would otherwise keep the test database from being dropped.
    await sync_to_async(connections.close_all)()


def emit_tokens(run: Run, numbers: range) -> None:
    for number in numbers:
        emit(run.pk, StreamEvent.Type.TOKEN, {"text": f"[{number}]"})


def write_without_publishing(run: Run, seqs: range) -> list[StreamEvent]:
    """Rows the layer never delivered (a full or restarted channel layer)."""
    events = [
        StreamEvent.objects.create(run=run, seq=seq, type="token", data={"text": f"[{seq}]"})
        for seq in seqs
    ]
    Run.objects.filter(pk=run.pk).update(next_seq=seqs[-1] + 1)
    return events


async def connect(user: Any, run: Run, after: str | None = None) -> Any:
    """A socket straight to the routed consumer, with the user already in the scope."""
    path = f"/ws/runs/{run.pk}/" + (f"?after={after}" if after is not None else "")
    communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), path)
    communicator.scope["user"] = user
    OPEN.append(communicator)
    connected, code = await communicator.connect()
    return communicator, connected, code


async def receive_all(communicator: Any, timeout: float = 0.5) -> str:
    """Every frame until the socket is quiet."""
    frames = []
    while not await communicator.receive_nothing(timeout=timeout):
        frames.append(await communicator.receive_from())
    return "".join(frames)


def token_numbers(html: str) -> list[int]:
    return [int(text.strip("[]")) for text in TOKEN.findall(html)]


def session_cookie(client: Any, user: Any) -> bytes:
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}".encode()


# -- who may connect --------------------------------------------------------------------


async def test_anonymous_visitors_are_refused_as_unauthenticated(owner: Any) -> None:
    run = await database_sync_to_async(make_run)(owner)

    _, connected, code = await connect(AnonymousUser(), run)

    assert not connected
    assert code == CLOSE_UNAUTHENTICATED


async def test_an_outsider_is_refused_as_forbidden(owner: Any, outsider: Any) -> None:
    run = await database_sync_to_async(make_run)(owner)

    _, connected, code = await connect(outsider, run)

    assert not connected
    assert code == CLOSE_FORBIDDEN


async def test_anonymous_visitors_are_refused_through_the_whole_stack(owner: Any) -> None:
    run = await database_sync_to_async(make_run)(owner)
    communicator = WebsocketCommunicator(
        application, f"/ws/runs/{run.pk}/", headers=[SITE_HOST, (b"origin", GOOD_ORIGIN)]
    )
    OPEN.append(communicator)

    connected, code = await communicator.connect()

    assert not connected
    assert code == CLOSE_UNAUTHENTICATED


async def test_an_observer_with_a_session_watches_through_the_whole_stack(
    client: Any, owner: Any, observer: Any
) -> None:
    run = await database_sync_to_async(make_run)(owner)
    cookie = await sync_to_async(session_cookie)(client, observer)
    communicator = WebsocketCommunicator(
        application,
        f"/ws/runs/{run.pk}/",
        headers=[SITE_HOST, (b"origin", GOOD_ORIGIN), (b"cookie", cookie)],
    )
    OPEN.append(communicator)

    connected, _ = await communicator.connect()
    await database_sync_to_async(emit)(run.pk, "status", {"status": "thinking", "detail": ""})

    assert connected
    assert 'id="run-status"' in await communicator.receive_from(timeout=5)
    await communicator.disconnect()


async def test_a_foreign_origin_is_refused_even_for_staff(client: Any, owner: Any) -> None:
    run = await database_sync_to_async(make_run)(owner)
    cookie = await sync_to_async(session_cookie)(client, owner)
    communicator = WebsocketCommunicator(
        application,
        f"/ws/runs/{run.pk}/",
        headers=[(b"origin", b"http://evil.example"), (b"cookie", cookie)],
    )
    OPEN.append(communicator)

    connected, _ = await communicator.connect()

    assert not connected


async def test_a_run_that_does_not_exist_is_closed_as_not_found(owner: Any) -> None:
    run = await database_sync_to_async(make_run)(owner)
    run.pk += 1000

    communicator, connected, _ = await connect(owner, run)

    assert connected  # accepted first (the tier check), then closed
    assert (await communicator.receive_output(timeout=2))["code"] == CLOSE_NOT_FOUND


# -- the fragments ---------------------------------------------------------------------


EVENTS_AND_IDS = [
    ("status", {"status": "tool_running", "detail": "Running list_tasks"}, ['id="run-status"']),
    ("token", {"text": "Hello"}, ['hx-swap-oob="beforeend:#run-reply"']),
    (
        "tool_start",
        {"execution_id": 7, "tool": "list_tasks", "arguments": {"limit": 5}, "step": 2},
        ['hx-swap-oob="beforeend:#timeline"', 'id="tool-7"', 'id="tool-7-arguments"'],
    ),
    (
        "tool_result",
        {
            "execution_id": 7,
            "tool": "list_tasks",
            "outcome": "error",
            "duration_ms": 12,
            "fingerprint": "abc123def4567890",
            "result": None,
            "error": "boom",
        },
        ['id="tool-7-outcome"', 'id="tool-7-result"'],
    ),
    (
        "budget",
        {
            "steps": {"used": 9, "limit": 10, "percent": 90.0, "state": "red"},
            "wall_clock": {"used": 7.0, "limit": 300, "percent": 2.3, "state": "green"},
            "cost": {"used": "0.35", "limit": "0.5", "percent": 70.0, "state": "amber"},
            "retries": {"abc123def4567890": 2},
            "retry_limit": 3,
        },
        ['id="run-budget"', 'id="budget-steps"', 'id="budget-retries"'],
    ),
    (
        "guardrails",
        {"loop": {"count": 4, "threshold": 5}, "no_progress": {"count": 0, "threshold": 3}},
        ['id="run-guardrails"', 'id="guardrail-loop"'],
    ),
    (
        "approval",
        {"approval_id": 3, "tool": "create_task", "arguments": {"title": "x"}, "reason": "Risky"},
        ['id="run-approval"'],
    ),
    (
        "stop_reason",
        {
            "reason": "max_steps",
            "label": "Step budget used up",
            "suggestion": "Run it again with 20 steps.",
            "next_action": {
                "kind": "raise_budget",
                "label": "Run again with 20 steps",
                "budget": "max_steps",
                "value": "20",
                "mode": "normal",
                "tier": "operator",
            },
        },
        ['id="stop-reason"', 'id="next-action"', 'id="task-queue"'],
    ),
    ("error", {"message": "Provider timed out"}, ['id="last-error"']),
]


@pytest.mark.parametrize(("event_type", "data", "ids"), EVENTS_AND_IDS)
async def test_each_event_arrives_as_the_fragment_the_page_swaps_in(
    operator: Any, event_type: str, data: dict[str, Any], ids: list[str]
) -> None:
    run = await database_sync_to_async(make_run)(operator)
    communicator, connected, _ = await connect(operator, run)
    assert connected

    event = await database_sync_to_async(emit)(run.pk, event_type, data)

    html = await communicator.receive_from(timeout=5)
    for expected in ids:
        assert expected in html
    assert f'id="run-last-seq" data-seq="{event.seq}"' in html
    await communicator.disconnect()


async def test_the_replayed_page_state_and_the_live_fragment_are_the_same_html(
    operator: Any,
) -> None:
    run = await database_sync_to_async(make_run)(operator)
    communicator, connected, _ = await connect(operator, run)
    assert connected
    await database_sync_to_async(emit)(run.pk, "status", {"status": "streaming", "detail": "x"})
    live = await communicator.receive_from(timeout=5)
    await communicator.disconnect()

    replay, connected, _ = await connect(operator, run, after="0")
    assert connected
    replayed = await replay.receive_from(timeout=5)

    assert replayed == live
    await replay.disconnect()


async def test_text_from_the_model_and_tools_is_escaped(operator: Any) -> None:
    run = await database_sync_to_async(make_run)(operator)
    communicator, connected, _ = await connect(operator, run)
    assert connected

    await database_sync_to_async(emit)(run.pk, "token", {"text": "<script>alert(1)</script>"})
    await database_sync_to_async(emit)(
        run.pk,
        "tool_start",
        {"execution_id": 1, "tool": "<b>x</b>", "arguments": {"q": "<img src=x>"}, "step": 1},
    )

    html = await receive_all(communicator)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img" not in html
    assert "<b>x</b>" not in html
    await communicator.disconnect()


async def test_an_observer_gets_no_buttons_for_the_next_action(
    observer: Any, operator: Any
) -> None:
    run = await database_sync_to_async(make_run)(operator)
    watching, connected, _ = await connect(observer, run)
    assert connected
    acting, connected, _ = await connect(operator, run)
    assert connected

    await database_sync_to_async(emit)(run.pk, *EVENTS_AND_IDS[7][:2])

    watched = await watching.receive_from(timeout=5)
    acted = await acting.receive_from(timeout=5)
    assert "hx-post" not in watched
    assert "An Operator or Owner can do this." in watched
    assert f'hx-post="/chat/runs/{run.pk}/retry/"' in acted
    await watching.disconnect()
    await acting.disconnect()


# -- replay: never a gap, never a duplicate ---------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [(b"", 0), (b"after=12", 12), (b"after=-3", 0), (b"after=abc", 0), (b"x=1&after=5", 5)],
)
async def test_the_last_seq_is_read_from_the_query_string(query: bytes, expected: int) -> None:
    assert after_seq(query) == expected


async def test_a_first_connection_gets_every_event_so_far(operator: Any) -> None:
    run = await database_sync_to_async(make_run)(operator)
    await database_sync_to_async(emit_tokens)(run, range(1, 8))

    communicator, connected, _ = await connect(operator, run)
    assert connected

    html = await receive_all(communicator)
    assert token_numbers(html) == list(range(1, 8))
    assert LAST_SEQ.findall(html)[-1] == "7"
    await communicator.disconnect()


async def test_a_reconnection_with_its_last_seq_gets_exactly_the_missed_events(
    operator: Any,
) -> None:
    run = await database_sync_to_async(make_run)(operator)
    first, connected, _ = await connect(operator, run)
    assert connected
    await database_sync_to_async(emit_tokens)(run, range(1, 5))
    seen = token_numbers(await receive_all(first))
    await first.disconnect()
    # While the page was away:
    await database_sync_to_async(emit_tokens)(run, range(5, 12))

    again, connected, _ = await connect(operator, run, after=str(seen[-1]))
    assert connected
    missed = token_numbers(await receive_all(again))
    await database_sync_to_async(emit_tokens)(run, range(12, 14))
    live = token_numbers(await receive_all(again))

    assert seen == [1, 2, 3, 4]
    assert missed == list(range(5, 12))
    assert live == [12, 13]
    await again.disconnect()


async def test_a_long_replay_comes_in_batches_without_gaps(operator: Any) -> None:
    run = await database_sync_to_async(make_run)(operator)
    await database_sync_to_async(emit_tokens)(run, range(1, 1202))

    communicator, connected, _ = await connect(operator, run, after="100")
    assert connected

    html = await receive_all(communicator)
    assert token_numbers(html) == list(range(101, 1202))
    assert LAST_SEQ.findall(html) == ["600", "1100", "1201"]
    await communicator.disconnect()


async def test_events_emitted_while_connecting_arrive_once_each_in_order(operator: Any) -> None:
    run = await database_sync_to_async(make_run)(operator)
    await database_sync_to_async(emit_tokens)(run, range(1, 51))

    def keep_emitting() -> None:
        emit_tokens(run, range(51, 301))
        connections.close_all()

    producer = threading.Thread(target=keep_emitting)
    producer.start()
    communicator, connected, _ = await connect(operator, run, after="20")
    assert connected
    await sync_to_async(producer.join)()

    html = await receive_all(communicator)
    assert token_numbers(html) == list(range(21, 301))
    await communicator.disconnect()


async def test_a_live_event_at_or_below_the_last_seq_sent_is_dropped(operator: Any) -> None:
    run = await database_sync_to_async(make_run)(operator)
    await database_sync_to_async(emit_tokens)(run, range(1, 4))
    communicator, connected, _ = await connect(operator, run)
    assert connected
    assert token_numbers(await receive_all(communicator)) == [1, 2, 3]
    stale = await database_sync_to_async(StreamEvent.objects.get)(run=run, seq=2)

    # The layer delivers an event twice (a retrying producer, two publishers).
    await get_channel_layer().group_send(
        run_group(run.pk), {"type": "run.events", **events_message(run.pk, [stale])}
    )

    assert await communicator.receive_nothing(timeout=0.5)
    await communicator.disconnect()


async def test_a_live_event_after_a_gap_brings_the_missing_events_from_the_database(
    operator: Any,
) -> None:
    run = await database_sync_to_async(make_run)(operator)
    await database_sync_to_async(emit_tokens)(run, range(1, 3))
    communicator, connected, _ = await connect(operator, run)
    assert connected
    assert token_numbers(await receive_all(communicator)) == [1, 2]

    *_, latest = await database_sync_to_async(write_without_publishing)(run, range(3, 6))
    await get_channel_layer().group_send(
        run_group(run.pk), {"type": "run.events", **events_message(run.pk, [latest])}
    )

    html = await receive_all(communicator)
    assert token_numbers(html) == [3, 4, 5]
    await database_sync_to_async(emit_tokens)(run, range(6, 7))
    assert token_numbers(await receive_all(communicator)) == [6]
    await communicator.disconnect()


async def test_the_events_of_one_change_arrive_in_one_frame_in_order(operator: Any) -> None:
    run = await database_sync_to_async(make_run)(operator)
    communicator, connected, _ = await connect(operator, run)
    assert connected

    await database_sync_to_async(emit_many)(
        run.pk,
        [
            ("status", {"status": "streaming", "detail": "Step 1"}),
            ("token", {"text": "[1]"}),
            ("token", {"text": "[2]"}),
            ("token", {"text": "[3]"}),
        ],
    )

    frame = await communicator.receive_from(timeout=5)
    assert frame.index('id="run-status"') < frame.index("[1]")
    assert token_numbers(frame) == [1, 2, 3]
    assert LAST_SEQ.findall(frame) == ["4"]
    assert await communicator.receive_nothing(timeout=0.5)
    await communicator.disconnect()


async def test_a_live_batch_overlapping_what_was_sent_sends_only_the_new_events(
    operator: Any,
) -> None:
    run = await database_sync_to_async(make_run)(operator)
    await database_sync_to_async(emit_tokens)(run, range(1, 4))
    communicator, connected, _ = await connect(operator, run)
    assert connected
    assert token_numbers(await receive_all(communicator)) == [1, 2, 3]
    await database_sync_to_async(write_without_publishing)(run, range(4, 6))
    sent = await database_sync_to_async(list)(StreamEvent.objects.filter(run=run, seq__gte=2))

    # A batch that starts with events the page has, then two it has not.
    assert [event.seq for event in sent] == [2, 3, 4, 5]
    await get_channel_layer().group_send(
        run_group(run.pk), {"type": "run.events", **events_message(run.pk, sent)}
    )

    assert token_numbers(await receive_all(communicator)) == [4, 5]
    await communicator.disconnect()
