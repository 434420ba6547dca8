"""How the served process is set up (`controlplane.runtime.serving`): daphne's requests skip
Twisted's form parsing (daphne hands the raw body to the ASGI application, where Django
parses forms), and what startup loaded is exempt from garbage collection."""

from __future__ import annotations

import gc
from typing import Any
from unittest import mock

from daphne.http_protocol import WebRequest

import controlplane.asgi  # noqa: F401  (applies it, as daphne importing the application does)


def test_daphnes_requests_are_made_without_twisteds_form_parsing() -> None:
    channel: Any = mock.MagicMock()

    request = WebRequest(channel)

    assert request._parsePOSTFormSubmission is False


def test_what_the_application_loaded_is_exempt_from_garbage_collection() -> None:
    assert gc.get_freeze_count() > 10_000  # Django and the apps, at least
