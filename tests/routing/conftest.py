from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

from routing.models import Budget, ServiceKey
from tests.live_server import live_server_url  # noqa: F401  (the fixture, for these tests)
from tests.routing.gateway_client import GatewayClient
from tests.routing.openai_server import OpenAIServer


@pytest.fixture
def client() -> GatewayClient:
    """Django's test client; the gateway's /v1/ paths go through its ASGI application."""
    return GatewayClient()


@pytest.fixture
def committed(django_capture_on_commit_callbacks: Any) -> Callable[[], Any]:
    """Run what waits for the commit (the routing table's invalidation) now."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture
def issued(db: Any) -> tuple[ServiceKey, str]:
    return ServiceKey.issue(name="billing worker", service="billing")


@pytest.fixture
def budget(db: Any) -> Budget:
    """A global budget of $10 a day."""
    return Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal(10))


@pytest.fixture
def upstream() -> Iterator[OpenAIServer]:
    with OpenAIServer() as server:
        yield server
