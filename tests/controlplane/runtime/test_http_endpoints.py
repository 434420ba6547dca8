"""`controlplane.runtime.http_endpoints`: the endpoints' exact paths go to their own ASGI
application, everything else to Django; and the host, HTTPS and security-header
rules those endpoints apply are Django's own, checked here against Django."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import HttpCommunicator
from django.core import signals
from django.core.exceptions import DisallowedHost
from django.db import close_old_connections, connections
from django.http import HttpResponse
from django.middleware.security import SecurityMiddleware
from django.test import RequestFactory

from controlplane import asgi_routes
from controlplane.money import loads_exact
from controlplane.runtime import endpoint_threads
from controlplane.runtime.http_endpoints import HTTPRouter, is_secure, refusal, security_headers
from healthmon.otlp.receiver import LogReceiver
from routing.gateway_asgi import ENDPOINTS, GatewayApplication

# -- what controlplane.asgi serves where ----------------------------------------------


@pytest.fixture
def served(db: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The project's ASGI application may be called in this test: Django's half runs
    inside the test's transaction (as its test client arranges, by not closing the
    connection at the end of each request); the gateway's half on a pool of its own."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    pool = ThreadPoolExecutor(1, thread_name_prefix="gateway-test")
    monkeypatch.setattr(endpoint_threads, "_pool", pool)
    try:
        yield
    finally:
        pool.submit(connections.close_all).result()
        pool.shutdown()
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


def fetch(path: str, method: str = "GET") -> dict[str, Any]:
    from controlplane.asgi import application

    async def exchange() -> dict[str, Any]:
        communicator = HttpCommunicator(
            application, method, path, headers=[(b"host", b"localhost")]
        )
        response = await communicator.get_response(timeout=10)
        await communicator.wait(timeout=10)
        return response

    response = async_to_sync(exchange)()
    response["headers"] = {
        name.decode().lower(): value.decode() for name, value in response["headers"]
    }
    return response


def gateway_error(response: dict[str, Any]) -> dict[str, Any]:
    assert response["headers"]["content-type"] == "application/json"
    return loads_exact(response["body"])["error"]


def test_the_gateway_paths_are_answered_by_the_gateway(served: None) -> None:
    models = fetch("/v1/models")
    chat = fetch("/v1/chat/completions")
    with_query = fetch("/v1/models?limit=5")

    # Django has no view at these paths: it would answer 404, not the gateway's JSON.
    assert models["status"] == with_query["status"] == 401
    assert gateway_error(models)["code"] == gateway_error(with_query)["code"] == "invalid_api_key"
    assert chat["status"] == 405
    assert chat["headers"]["allow"] == "POST"
    assert gateway_error(chat)["code"] == "method_not_allowed"


@pytest.mark.parametrize("path", ["/v1/other", "/v1/models/", "/v1/chat/completions/", "/v1"])
def test_other_paths_even_next_to_the_gateways_go_to_django(served: None, path: str) -> None:
    response = fetch(path)

    # Django's URLconf answers them, with the gateway's JSON 404 (routing.views).
    assert response["status"] == 404
    assert "x-frame-options" in response["headers"]  # Django's middleware ran
    assert gateway_error(response)["code"] == "unknown_url"


def test_healthz_is_served_by_django(served: None) -> None:
    response = fetch("/healthz")

    assert response["status"] == 200
    assert loads_exact(response["body"])["status"] == "ok"
    assert "x-frame-options" in response["headers"]  # Django's middleware ran


GATEWAY_PATHS = (
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/messages",
    "/v1/embeddings",
    "/v1/audio/speech",
    "/v1/audio/transcriptions",
    "/v1/models",
)


def test_the_routes_send_exactly_the_gateway_paths_to_the_gateway() -> None:
    registered = asgi_routes.http_endpoints
    gateway_paths = {
        path for path, app in registered.items() if isinstance(app, GatewayApplication)
    }

    assert gateway_paths == set(ENDPOINTS) == set(GATEWAY_PATHS)
    assert registered["/v1/models"] is registered["/v1/chat/completions"]


def test_the_routes_send_v1_logs_to_the_otlp_log_receiver() -> None:
    registered = asgi_routes.http_endpoints

    assert set(registered) == {*GATEWAY_PATHS, "/v1/logs"}
    assert isinstance(registered["/v1/logs"], LogReceiver)


# -- HTTPRouter, with stand-in applications -------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scopes.append(scope)


def route(router: HTTPRouter, scope: dict[str, Any]) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        pass

    async_to_sync(router)(scope, receive, send)


@pytest.fixture
def endpoint() -> Recorder:
    return Recorder()


def router(django: Recorder, endpoint: Recorder) -> HTTPRouter:
    return HTTPRouter(django, {"/fast": endpoint, "/also-fast": endpoint})


@pytest.mark.parametrize("path", ["/fast", "/also-fast"])
def test_a_registered_path_goes_to_its_application(endpoint: Recorder, path: str) -> None:
    django = Recorder()

    route(router(django, endpoint), {"type": "http", "path": path})

    assert [scope["path"] for scope in endpoint.scopes] == [path]
    assert django.scopes == []


@pytest.mark.parametrize(
    "scope",
    [
        {"type": "http", "path": "/fast/"},
        {"type": "http", "path": "/fast/more"},
        {"type": "http", "path": "/FAST"},
        {"type": "http", "path": "/"},
        {"type": "http"},
        {"type": "websocket", "path": "/fast"},
    ],
)
def test_anything_else_goes_to_django(endpoint: Recorder, scope: dict[str, Any]) -> None:
    django = Recorder()

    route(router(django, endpoint), scope)

    assert django.scopes == [scope]
    assert endpoint.scopes == []


# -- the host check, as Django's ------------------------------------------------------

HOSTS = [
    "localhost",
    "localhost:8000",
    "LOCALHOST",
    "127.0.0.1:8000",
    "[::1]:8000",
    "api.example.com",
    "example.com",
    "evil.example",
    "localhost.evil.example",
    "evil.example:localhost",
    "local host",
    "api.example.com.",
]


def django_accepts_host(host: str, forwarded: str | None = None) -> bool:
    headers = {"Host": host}
    if forwarded is not None:
        headers["X-Forwarded-Host"] = forwarded
    request = RequestFactory().get("/", headers=headers)
    try:
        request.get_host()
    except DisallowedHost:
        return False
    return True


def http_scope(scheme: str = "http") -> dict[str, Any]:
    return {"type": "http", "path": "/v1/models", "scheme": scheme}


@pytest.mark.parametrize("host", HOSTS)
def test_a_host_is_refused_exactly_when_django_would_refuse_it(settings: Any, host: str) -> None:
    settings.ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]", ".example.com"]

    refused = refusal(http_scope(), {"host": host})

    assert (refused is None) == django_accepts_host(host)
    if refused is not None:
        assert refused[0] == 400
        assert "ALLOWED_HOSTS" in refused[1]


@pytest.mark.parametrize("host", ["localhost", "app.localhost:8000", "127.0.0.1", "example.com"])
def test_in_debug_with_no_allowed_hosts_the_local_names_are_allowed_as_by_django(
    settings: Any, host: str
) -> None:
    settings.DEBUG = True
    settings.ALLOWED_HOSTS = []

    assert (refusal(http_scope(), {"host": host}) is None) == django_accepts_host(host)


def test_without_a_host_header_the_request_is_refused(settings: Any) -> None:
    settings.ALLOWED_HOSTS = ["*"]

    assert refusal(http_scope(), {}) is not None
    assert refusal(http_scope(), {"host": ""}) is not None


@pytest.mark.parametrize("use_forwarded", [True, False])
@pytest.mark.parametrize(
    ("host", "forwarded"), [("localhost", "evil.example"), ("evil.example", "localhost")]
)
def test_the_forwarded_host_counts_only_with_use_x_forwarded_host(
    settings: Any, use_forwarded: bool, host: str, forwarded: str
) -> None:
    settings.ALLOWED_HOSTS = ["localhost"]
    settings.USE_X_FORWARDED_HOST = use_forwarded

    refused = refusal(http_scope(), {"host": host, "x-forwarded-host": forwarded})

    assert (refused is None) == django_accepts_host(host, forwarded)
    assert (refused is None) == ((forwarded if use_forwarded else host) == "localhost")


# -- HTTPS, as Django's ----------------------------------------------------------------

PROXY = ("HTTP_X_FORWARDED_PROTO", "https")


def django_request(scheme: str, forwarded_proto: str | None) -> Any:
    headers = {"X-Forwarded-Proto": forwarded_proto} if forwarded_proto is not None else {}
    return RequestFactory().get("/", secure=scheme == "https", headers=headers)


def headers_for(forwarded_proto: str | None) -> dict[str, str]:
    headers = {"host": "localhost"}
    if forwarded_proto is not None:
        headers["x-forwarded-proto"] = forwarded_proto
    return headers


@pytest.mark.parametrize("proxy", [None, PROXY])
@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("forwarded_proto", [None, "https", "http", "https, http", " https ,x"])
def test_is_secure_agrees_with_django(
    settings: Any, proxy: Any, scheme: str, forwarded_proto: str | None
) -> None:
    settings.SECURE_PROXY_SSL_HEADER = proxy

    ours = is_secure(http_scope(scheme), headers_for(forwarded_proto))

    assert ours == django_request(scheme, forwarded_proto).is_secure()


@pytest.mark.parametrize(("scheme", "forwarded_proto"), [("http", None), ("https", "http")])
def test_with_https_required_a_plain_request_is_refused_with_403(
    settings: Any, scheme: str, forwarded_proto: str | None
) -> None:
    settings.ALLOWED_HOSTS = ["localhost"]
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = PROXY

    refused = refusal(http_scope(scheme), headers_for(forwarded_proto))

    assert refused is not None
    assert refused[0] == 403


@pytest.mark.parametrize(("scheme", "forwarded_proto"), [("https", None), ("http", "https")])
def test_with_https_required_a_secure_request_passes(
    settings: Any, scheme: str, forwarded_proto: str | None
) -> None:
    settings.ALLOWED_HOSTS = ["localhost"]
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = PROXY

    assert refusal(http_scope(scheme), headers_for(forwarded_proto)) is None


def test_a_bad_host_is_refused_before_https_is_asked_for(settings: Any) -> None:
    settings.ALLOWED_HOSTS = ["localhost"]
    settings.SECURE_SSL_REDIRECT = True

    refused = refusal(http_scope("http"), {"host": "evil.example"})

    assert refused is not None
    assert refused[0] == 400


# -- security headers, as Django's SecurityMiddleware adds them ---------------------------


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize(
    ("seconds", "subdomains", "preload"),
    [(0, False, False), (3600, False, False), (3600, True, False), (31_536_000, True, True)],
)
def test_hsts_and_nosniff_are_what_djangos_security_middleware_adds(
    settings: Any, scheme: str, seconds: int, subdomains: bool, preload: bool
) -> None:
    settings.SECURE_HSTS_SECONDS = seconds
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = subdomains
    settings.SECURE_HSTS_PRELOAD = preload
    settings.SECURE_CONTENT_TYPE_NOSNIFF = True
    settings.SECURE_PROXY_SSL_HEADER = None
    request = django_request(scheme, None)
    django = SecurityMiddleware(lambda request: HttpResponse()).process_response(
        request, HttpResponse()
    )

    ours = security_headers(http_scope(scheme), headers_for(None))

    assert ours["X-Content-Type-Options"] == django["X-Content-Type-Options"] == "nosniff"
    assert ours.get("Strict-Transport-Security") == django.headers.get("Strict-Transport-Security")
    assert ("Strict-Transport-Security" in ours) == (scheme == "https" and seconds > 0)


SECURITY_HEADERS = ["referrer-policy", "cross-origin-opener-policy", "x-content-type-options"]


def test_a_v1_answer_carries_the_security_headers_of_a_page_of_the_site(served: None) -> None:
    page = fetch("/healthz")
    gateway = fetch("/v1/models")

    for name in SECURITY_HEADERS:
        assert gateway["headers"][name] == page["headers"][name], name
    assert gateway["headers"]["referrer-policy"] == "same-origin"
    assert gateway["headers"]["cross-origin-opener-policy"] == "same-origin"


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_the_v1_security_headers_are_all_that_djangos_middleware_adds(
    settings: Any, scheme: str
) -> None:
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_PROXY_SSL_HEADER = None
    bare = HttpResponse()
    before = set(bare.headers)
    django = SecurityMiddleware(lambda request: HttpResponse()).process_response(
        django_request(scheme, None), bare
    )

    ours = security_headers(http_scope(scheme), headers_for(None))

    assert ours == {name: value for name, value in django.items() if name not in before}


def test_a_changed_security_setting_changes_the_v1_headers(settings: Any) -> None:
    settings.SECURE_REFERRER_POLICY = "no-referrer"
    settings.SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin-allow-popups"

    ours = security_headers(http_scope(), headers_for(None))

    assert ours["Referrer-Policy"] == "no-referrer"
    assert ours["Cross-Origin-Opener-Policy"] == "same-origin-allow-popups"

    settings.SECURE_CROSS_ORIGIN_OPENER_POLICY = None

    assert "Cross-Origin-Opener-Policy" not in security_headers(http_scope(), headers_for(None))
