"""The websocket routes of `controlplane.asgi_routes`, through the project's ASGI
application: a path no consumer serves is refused at the handshake, cleanly."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator

from controlplane.asgi import application
from controlplane.asgi_routes import websocket_urlpatterns
from controlplane.websockets import NOT_FOUND

ORIGIN = (b"origin", b"http://localhost:8000")
HOST = (b"host", b"localhost:8000")


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "path",
    [
        "/ws/runs/abc/",
        "/ws/runs/",
        "/ws/runs/7",
        "/ws/nowhere/",
        "/",
        "/ws/home/x/",
        "/ws/chat/sessions/abc/",
    ],
)
async def test_it_refuses_a_websocket_path_no_consumer_serves_without_an_error(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    communicator = WebsocketCommunicator(application, path, headers=[HOST, ORIGIN])

    with caplog.at_level(logging.WARNING):
        connected, code = await communicator.connect()

    assert connected is False
    assert code == NOT_FOUND
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    await communicator.wait()  # the application ended, and nothing raised


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_it_still_serves_a_declared_path(admin_user: Any) -> None:
    communicator = WebsocketCommunicator(application, "/ws/home/", headers=[HOST, ORIGIN])
    communicator.scope["user"] = admin_user

    connected, _ = await communicator.connect()

    assert connected is True
    await communicator.disconnect()


def test_every_websocket_path_of_the_product_is_declared_in_one_list() -> None:
    declared = [str(route.pattern) for route in websocket_urlpatterns]

    assert declared == [
        "ws/home/",
        "ws/runs/<int:run_id>/",
        "ws/chat/sessions/",
        "ws/chat/sessions/<int:session_id>/",
        "ws/selfheal/",
        "ws/routing/",
        "ws/health/",
        "ws/health/code/",
        "",
    ]
