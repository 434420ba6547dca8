"""daphne's requests in this project skip Twisted's form parsing (`controlplane.http_server`):
daphne hands the raw body to the ASGI application, where Django parses forms."""

from __future__ import annotations

from typing import Any
from unittest import mock

from daphne.http_protocol import WebRequest

import controlplane.asgi  # noqa: F401  (applies it, as daphne importing the application does)


def test_daphnes_requests_are_made_without_twisteds_form_parsing() -> None:
    channel: Any = mock.MagicMock()

    request = WebRequest(channel)

    assert request._parsePOSTFormSubmission is False
