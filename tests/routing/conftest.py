from __future__ import annotations

import pytest

from tests.live_server import live_server_url  # noqa: F401  (the fixture, for these tests)
from tests.routing.gateway_client import GatewayClient


@pytest.fixture
def client() -> GatewayClient:
    """Django's test client; the gateway's /v1/ paths go through its ASGI application."""
    return GatewayClient()
