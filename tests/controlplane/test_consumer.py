"""The Home websocket: who may connect, and the live pending-approvals fragment.

Transactional tests: `publish()` sends on commit, and the consumer reads the
database from other threads, which must see committed rows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db import connections, transaction

from controlplane.approvals import request_approval
from controlplane.asgi import application
from controlplane.consumers import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED
from controlplane.home.consumer import HomeConsumer

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

GOOD_ORIGIN = b"http://localhost:8000"
# A browser sends both; the socket opens only when the page is of the site it reaches.
SITE_HOST = (b"host", b"localhost:8000")
SCRIPT_REASON = "<script>alert('pwned')</script> a costly deep research run"
ESCAPED_REASON = "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt; a costly deep research run"


@pytest_asyncio.fixture(autouse=True)
async def _close_connections_of_the_sync_thread() -> AsyncIterator[None]:
    yield
    # The ORM calls of these tests run in asgiref's sync thread, whose persistent
    # connections (CONN_MAX_AGE) would otherwise keep the test database from being dropped.
    await sync_to_async(connections.close_all)()


def session_cookie(client: Any, user: Any) -> bytes:
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}".encode()


async def connect_home(cookie: bytes | None = None, origin: bytes | None = GOOD_ORIGIN) -> Any:
    """A socket to /ws/home/ through the whole ASGI stack, as a browser opens it."""
    headers = [SITE_HOST]
    if origin is not None:
        headers.append((b"origin", origin))
    if cookie is not None:
        headers.append((b"cookie", cookie))
    communicator = WebsocketCommunicator(application, "/ws/home/", headers=headers)
    connected, detail = await communicator.connect()
    return communicator, connected, detail


async def connect_consumer(user: Any) -> Any:
    """A socket straight to the consumer, with the user already in the scope."""
    communicator = WebsocketCommunicator(HomeConsumer.as_asgi(), "/ws/home/")
    communicator.scope["user"] = user
    connected, detail = await communicator.connect()
    return communicator, connected, detail


async def receive_html_containing(communicator: Any, text: str, timeout: float = 60) -> str:
    """The first frame that contains `text` (a frame from an earlier event may come first).
    The timeout only keeps a broken test from hanging."""
    while True:
        html = await communicator.receive_from(timeout=timeout)
        if text in html:
            return html


async def test_staff_with_a_session_are_accepted_through_the_whole_stack(
    client: Any, observer: Any
) -> None:
    cookie = await sync_to_async(session_cookie)(client, observer)

    communicator, connected, _ = await connect_home(cookie)

    assert connected
    await communicator.disconnect()


async def test_anonymous_visitors_are_refused_as_unauthenticated(db: Any) -> None:
    _, connected, code = await connect_home(cookie=None)

    assert not connected
    assert code == CLOSE_UNAUTHENTICATED


async def test_a_stale_session_cookie_is_refused_as_unauthenticated(db: Any) -> None:
    _, connected, code = await connect_home(
        cookie=f"{settings.SESSION_COOKIE_NAME}=no-such-session".encode()
    )

    assert not connected
    assert code == CLOSE_UNAUTHENTICATED


async def test_an_outsider_with_a_session_is_refused_as_forbidden(
    client: Any, outsider: Any
) -> None:
    cookie = await sync_to_async(session_cookie)(client, outsider)

    _, connected, code = await connect_home(cookie)

    assert not connected
    assert code == CLOSE_FORBIDDEN


@pytest.mark.parametrize("origin", [b"http://evil.example", b"null", None])
async def test_a_foreign_or_missing_origin_is_refused_even_for_staff(
    client: Any, owner: Any, origin: bytes | None
) -> None:
    cookie = await sync_to_async(session_cookie)(client, owner)

    _, connected, _ = await connect_home(cookie, origin=origin)

    assert not connected


@pytest.mark.parametrize("persona", ["observer", "operator", "owner", "superuser"])
async def test_every_staff_tier_is_accepted(request: Any, persona: str) -> None:
    user = await sync_to_async(request.getfixturevalue)(persona)

    communicator, connected, _ = await connect_consumer(user)

    assert connected
    await communicator.disconnect()


async def test_an_outsider_is_refused_by_the_consumer(outsider: Any) -> None:
    _, connected, code = await connect_consumer(outsider)

    assert not connected
    assert code == CLOSE_FORBIDDEN


async def test_anonymous_is_refused_by_the_consumer(db: Any) -> None:
    _, connected, code = await connect_consumer(AnonymousUser())

    assert not connected
    assert code == CLOSE_UNAUTHENTICATED


async def test_a_requested_approval_reaches_a_connected_staff_socket_escaped(
    client: Any, owner: Any, operator: Any
) -> None:
    cookie = await sync_to_async(session_cookie)(client, owner)
    communicator, connected, _ = await connect_home(cookie)
    assert connected

    approval = await database_sync_to_async(request_approval)(
        action="routing.costly_call", requested_by=operator, reason=SCRIPT_REASON
    )

    html = await receive_html_containing(communicator, f'id="approval-{approval.pk}"')
    assert 'id="pending-approvals"' in html
    assert 'hx-swap-oob="true"' in html
    assert ESCAPED_REASON in html
    assert "<script>" not in html
    assert "routing.costly_call" in html
    # The owner may decide the operator's request: the fragment carries the buttons.
    assert 'value="approve"' in html
    await communicator.disconnect()


async def test_the_requester_sees_their_own_request_without_decision_buttons(
    operator: Any,
) -> None:
    communicator, connected, _ = await connect_consumer(operator)
    assert connected

    approval = await database_sync_to_async(request_approval)(
        action="selfheal.repair", requested_by=operator, reason="Restart the stuck worker"
    )

    html = await receive_html_containing(communicator, f'id="approval-{approval.pk}"')
    assert "Nobody can decide their own request; ask another staff member." in html
    assert 'value="approve"' not in html
    await communicator.disconnect()


async def test_an_observer_sees_a_live_request_without_decision_buttons(
    observer: Any, operator: Any
) -> None:
    communicator, connected, _ = await connect_consumer(observer)
    assert connected

    approval = await database_sync_to_async(request_approval)(
        action="selfheal.repair", requested_by=operator, reason="Restart the stuck worker"
    )

    html = await receive_html_containing(communicator, f'id="approval-{approval.pk}"')
    assert "Restart the stuck worker" in html
    assert 'value="approve"' not in html
    await communicator.disconnect()


async def test_an_approval_rolled_back_is_never_published(
    operator: Any, owner: Any, monkeypatch: Any
) -> None:
    communicator, connected, _ = await connect_consumer(owner)
    assert connected
    layer = get_channel_layer()
    sent: list[dict[str, Any]] = []
    group_send = layer.group_send

    async def record_then_send(group: str, message: dict[str, Any]) -> None:
        sent.append(message)
        await group_send(group, message)

    monkeypatch.setattr(layer, "group_send", record_then_send)

    def request_then_roll_back() -> None:
        with transaction.atomic():
            request_approval(
                action="routing.costly_call", requested_by=operator, reason="Rolled back"
            )
            transaction.set_rollback(True)

    await database_sync_to_async(request_then_roll_back)()
    approval = await database_sync_to_async(request_approval)(
        action="routing.costly_call", requested_by=operator, reason="Committed"
    )

    # Events are sent in order: once the committed request's frame is here, anything
    # the rolled-back one had sent would have been sent before it.
    html = await receive_html_containing(communicator, f'id="approval-{approval.pk}"')
    assert "Rolled back" not in html
    approval_events = [m for m in sent if m["type"] == "approval.changed"]
    assert [message.get("approval_id") for message in approval_events] == [approval.pk]
    await communicator.disconnect()


async def test_one_socket_closing_leaves_the_others_subscribed(operator: Any, owner: Any) -> None:
    leaving, connected, _ = await connect_consumer(owner)
    assert connected
    staying, connected, _ = await connect_consumer(owner)
    assert connected
    await leaving.disconnect()

    approval = await database_sync_to_async(request_approval)(
        action="routing.costly_call", requested_by=operator, reason="After the first left"
    )

    await receive_html_containing(staying, f'id="approval-{approval.pk}"')
    await staying.disconnect()
