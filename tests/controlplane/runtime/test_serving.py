"""How the served process is set up (`controlplane.runtime.serving`): daphne's requests skip
Twisted's form parsing (daphne hands the raw body to the ASGI application, where Django
parses forms), a request's body reaches the application in one message rather than 8 KB
at a time, and what startup loaded is exempt from garbage collection."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any
from unittest import mock

import httpx
import pytest
from daphne.http_protocol import WebRequest
from daphne.server import Server

import controlplane.asgi  # noqa: F401  (applies it, as daphne importing the application does)
from benchmarks.harness import DaphneProcess, wait_until_ready
from controlplane.runtime.serving import REQUEST_BODY_CHUNK_BYTES


def test_daphnes_requests_are_made_without_twisteds_form_parsing() -> None:
    channel: Any = mock.MagicMock()

    request = WebRequest(channel)

    assert request._parsePOSTFormSubmission is False


def test_what_the_application_loaded_is_exempt_from_garbage_collection() -> None:
    assert gc.get_freeze_count() > 10_000  # Django and the apps, at least


def test_daphnes_servers_hand_a_body_on_whole_unless_told_a_size() -> None:
    listening = ["tcp:port=0:interface=127.0.0.1"]  # never run: made only
    assert Server(None, listening).request_buffer_size == REQUEST_BODY_CHUNK_BYTES
    assert Server(None, listening, request_buffer_size=4096).request_buffer_size == 4096


@pytest.fixture(scope="module")
def counting_server() -> Iterator[str]:
    """daphne serving `body_messages` from its command line, shared by the sizes."""
    with DaphneProcess("tests.controlplane.runtime.body_messages:application") as daphne:
        daphne.start()
        wait_until_ready(daphne.accepts_connections, daphne)
        yield daphne.url


@pytest.mark.parametrize(
    ("size", "messages"),
    [
        (0, 1),
        (40_000, 1),  # an upload Twisted keeps in memory: daphne alone sends it in five
        (300_000, 1),  # one Twisted spools to a file
        (REQUEST_BODY_CHUNK_BYTES * 2 + 5, 3),  # larger still: 1 MiB a message
    ],
)
def test_a_served_request_body_reaches_the_application_in_as_few_messages(
    counting_server: str, size: int, messages: int
) -> None:
    response = httpx.post(counting_server, content=b"x" * size, timeout=30)
    assert response.text == f"{messages} {size}"
