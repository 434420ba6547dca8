"""Which pages may open the live feeds: only the site's own origin (scheme, host and
port, as Django's CSRF check compares a form's Origin) and CSRF_TRUSTED_ORIGINS.

Each case is a staff member's browser (a valid session cookie) opening a run's
socket through the project's whole ASGI stack from a page at some origin.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connections

from controlplane.asgi import application
from tests.chat.runs import make_run

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

OPEN: list[WebsocketCommunicator] = []


@pytest_asyncio.fixture(autouse=True)
async def _clean_up_after_each_test() -> AsyncIterator[None]:
    yield
    while OPEN:
        with contextlib.suppress(Exception):  # a refused socket is closed already
            await OPEN.pop().disconnect()
    channel_layers.backends.clear()
    await sync_to_async(connections.close_all)()


@pytest.fixture
def observer_cookie(client: Any, observer: Any) -> bytes:
    client.force_login(observer)
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}".encode()


@pytest.fixture
def run_path(owner: Any) -> str:
    return f"/ws/runs/{make_run(owner).pk}/"


async def opens(
    path: str,
    cookie: bytes,
    *,
    host: str | None,
    origin: str | None,
    scheme: str = "ws",
    **extra: str,
) -> bool:
    """Whether the handshake is accepted (the observer may watch any run)."""
    headers = [(b"cookie", cookie)]
    if host is not None:
        headers.append((b"host", host.encode()))
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    headers += [(name.encode(), value.encode()) for name, value in extra.items()]
    communicator = WebsocketCommunicator(application, path, headers=headers)
    communicator.scope["scheme"] = scheme
    OPEN.append(communicator)
    connected, _ = await communicator.connect()
    return connected


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        ("127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("localhost:8000", "http://localhost:8000"),
        ("127.0.0.1", "http://127.0.0.1"),
    ],
)
async def test_the_sites_own_pages_open_the_socket(
    run_path: str, observer_cookie: bytes, host: str, origin: str
) -> None:
    assert await opens(run_path, observer_cookie, host=host, origin=origin)


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        ("127.0.0.1:8000", "http://127.0.0.1:9999"),  # another port, same host name
        ("localhost:8000", "http://localhost:3000"),  # a dev server next door
        ("127.0.0.1:8000", "https://127.0.0.1:8000"),  # https on a plain-HTTP site
        ("127.0.0.1:8000", "http://127.0.0.1"),  # the default port is another port
        ("127.0.0.1:8000", "http://localhost:8000"),  # another host name
        ("127.0.0.1:8000", "http://evil.example"),
        ("127.0.0.1:8000", "null"),  # a sandboxed frame or a file
        ("127.0.0.1:8000", None),  # no browser leaves it out
        ("evil.example", "http://evil.example"),  # a Host outside ALLOWED_HOSTS
        (None, "http://127.0.0.1:8000"),  # no Host: the site's origin is unknown
    ],
)
async def test_a_page_at_any_other_origin_is_refused_even_with_a_staff_session(
    run_path: str, observer_cookie: bytes, host: str | None, origin: str | None
) -> None:
    assert not await opens(run_path, observer_cookie, host=host, origin=origin)


async def test_a_tls_socket_is_opened_from_the_https_page_only(
    run_path: str, observer_cookie: bytes, settings: Any
) -> None:
    settings.ALLOWED_HOSTS = ["controlplane.example.com"]
    host = "controlplane.example.com"

    assert await opens(run_path, observer_cookie, host=host, origin=f"https://{host}", scheme="wss")
    assert not await opens(
        run_path, observer_cookie, host=host, origin=f"http://{host}", scheme="wss"
    )


async def test_behind_a_proxy_the_forwarded_scheme_decides_as_for_django(
    run_path: str, observer_cookie: bytes, settings: Any
) -> None:
    settings.ALLOWED_HOSTS = ["controlplane.example.com"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    host = "controlplane.example.com"
    https = {"x-forwarded-proto": "https"}

    assert await opens(run_path, observer_cookie, host=host, origin=f"https://{host}", **https)
    assert not await opens(run_path, observer_cookie, host=host, origin=f"http://{host}", **https)
    # The proxy said nothing: the socket is plain, so only the plain page may open it.
    assert not await opens(run_path, observer_cookie, host=host, origin=f"https://{host}")


async def test_csrf_trusted_origins_open_the_socket_as_they_post_forms(
    run_path: str, observer_cookie: bytes, settings: Any
) -> None:
    settings.CSRF_TRUSTED_ORIGINS = ["http://localhost:3000", "https://*.example.com"]
    site = "127.0.0.1:8000"

    assert await opens(run_path, observer_cookie, host=site, origin="http://localhost:3000")
    assert await opens(run_path, observer_cookie, host=site, origin="https://ops.example.com")
    assert not await opens(run_path, observer_cookie, host=site, origin="http://ops.example.com")
    assert not await opens(run_path, observer_cookie, host=site, origin="http://localhost:3001")


async def test_a_refused_origin_is_logged_with_the_sites_own(
    run_path: str, observer_cookie: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    await opens(run_path, observer_cookie, host="127.0.0.1:8000", origin="http://127.0.0.1:9999")

    assert "'http://127.0.0.1:9999' is not this site's (http://127.0.0.1:8000)" in caplog.text


async def test_observers_session_is_still_checked_after_the_origin(run_path: str) -> None:
    # The origin check comes first but does not replace the session check.
    assert not await opens(
        run_path, b"sessionid=forged", host="127.0.0.1:8000", origin="http://127.0.0.1:8000"
    )
