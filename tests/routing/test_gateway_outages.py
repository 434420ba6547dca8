"""The gateway's edges: a `/v1/...` path or method it does not serve, and Redis or the
database away, all answered with OpenAI-style JSON a client can read.

The outages are real: Redis and PostgreSQL clients pointed at a port nothing listens
on (`closed_port`), not a mocked failure.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.db import connection, connections
from django.test import Client, override_settings

from controlplane.money import loads_exact
from routing.gateway_asgi import GatewayApplication
from routing.models import OperationLog, Reservation, ServiceKey
from tests.local_servers import closed_port
from tests.routing import asgi_driver

pytestmark = pytest.mark.django_db


@pytest.fixture
def raw_key() -> str:
    return ServiceKey.issue(name="billing worker", service="billing")[1]


def json_error(status: int, content_type: str, body: bytes) -> dict[str, Any]:
    assert content_type == "application/json"
    error = loads_exact(body)["error"]
    assert isinstance(error["message"], str)
    assert error["message"]
    return error


# -- paths and methods ----------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/v1/images/generations", "/v1/foo", "/v1/", "/v1", "/v1/chat/completions/", "/v1/a/b/c"],
)
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_a_v1_path_the_gateway_does_not_serve_gets_openais_json_404(
    client: Client, raw_key: str, path: str, method: str
) -> None:
    response = client.generic(
        method,
        path,
        data=b'{"input": "hello"}',
        content_type="application/json",
        headers={"Authorization": f"Bearer {raw_key}"},
    )

    assert response.status_code == 404
    error = json_error(404, response["Content-Type"], response.content)
    assert (error["type"], error["code"]) == ("invalid_request_error", "unknown_url")
    assert f"{method} {path}" in error["message"]
    assert "POST /v1/embeddings, POST /v1/audio/speech" in error["message"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v1/chat/completions", "POST"),
        ("PUT", "/v1/chat/completions", "POST"),
        ("POST", "/v1/models", "GET"),
        ("DELETE", "/v1/models", "GET"),
        ("GET", "/v1/embeddings", "POST"),
        ("PUT", "/v1/audio/speech", "POST"),
    ],
)
def test_a_method_a_gateway_path_does_not_answer_gets_json_405(
    raw_key: str, method: str, path: str, allowed: str
) -> None:
    answer = asgi_driver.serve(asgi_driver.scope(path, method, headers=asgi_driver.bearer(raw_key)))

    assert answer.status == 405
    assert answer.headers["allow"] == allowed
    error = json_error(405, answer.headers["content-type"], answer.body)
    assert error["code"] == "method_not_allowed"


# -- Redis away ---------------------------------------------------------------------------


def unreachable_redis() -> Any:
    return override_settings(
        CACHES={
            "default": {
                "BACKEND": "controlplane.runtime.cache.SharedRedisCache",
                "LOCATION": f"redis://127.0.0.1:{closed_port()}/2",
            }
        }
    )


@pytest.mark.parametrize("path", [asgi_driver.CHAT_URL, asgi_driver.MODELS_URL])
def test_redis_unreachable_answers_503_service_unavailable_naming_it(
    raw_key: str, path: str
) -> None:
    method = "POST" if path == asgi_driver.CHAT_URL else "GET"
    with unreachable_redis():
        answer = asgi_driver.serve(
            asgi_driver.scope(path, method, headers=asgi_driver.bearer(raw_key)),
            asgi_driver.body_of({"messages": asgi_driver.HELLO}),
        )

    assert answer.status == 503
    error = json_error(503, answer.headers["content-type"], answer.body)
    assert (error["type"], error["code"]) == ("service_unavailable", "service_unavailable")
    assert error["message"].startswith("Redis")
    assert answer.headers["retry-after"]
    assert not Reservation.objects.exists()


# -- PostgreSQL away ----------------------------------------------------------------------


def on_a_thread_connected_to(settings_dict: dict[str, Any]) -> Callable[[Any], Any]:
    """Runs the gateway's logic as its pool would, on a thread of its own, whose
    database connection goes to `settings_dict` (the test's own thread keeps its
    working connection and transaction)."""
    backend = type(connections["default"])

    async def run(function: Callable[[], Any]) -> Any:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()

        def target() -> None:
            connections["default"] = backend(settings_dict, "default")
            try:
                result = function()
            except BaseException as exc:
                loop.call_soon_threadsafe(done.set_exception, exc)
            else:
                loop.call_soon_threadsafe(done.set_result, result)
            finally:
                connections["default"].close()

        threading.Thread(target=target).start()
        return await done

    return run


@pytest.mark.postgres
@pytest.mark.parametrize("path", [asgi_driver.CHAT_URL, asgi_driver.MODELS_URL])
def test_postgresql_unreachable_answers_503_service_unavailable(raw_key: str, path: str) -> None:
    closed = {**connection.settings_dict, "PORT": closed_port()}
    app = GatewayApplication(run_sync=on_a_thread_connected_to(closed))
    method = "POST" if path == asgi_driver.CHAT_URL else "GET"

    answer = asgi_driver.serve(
        asgi_driver.scope(path, method, headers=asgi_driver.bearer(raw_key)),
        asgi_driver.body_of({"messages": asgi_driver.HELLO}),
        app=app,
    )

    assert answer.status == 503
    error = json_error(503, answer.headers["content-type"], answer.body)
    assert error["code"] == "service_unavailable"
    assert error["message"].startswith("The database")
    assert not OperationLog.objects.exists()


@pytest.mark.postgres
def test_postgresql_is_given_a_short_connect_timeout() -> None:
    # A database host that does not answer is reported after this, not the system's
    # minutes-long TCP timeout (a closed port is refused at once either way).
    assert 0 < settings.DATABASES["default"]["OPTIONS"]["connect_timeout"] <= 10
