"""HTTP endpoints served beside Django's request path, straight from ASGI.

An app whose endpoint must add next to nothing to every request (the AI gateway,
called by other services for each model call) registers a plain ASGI application
for exact paths from its AppConfig.ready(); asgi.py sends those paths to it and
everything else to Django. Such an endpoint does its own authentication: no
session, CSRF or other middleware runs for it. The host check and the HTTPS
requirement of the settings still apply (`refusal`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.conf import settings
from django.http.request import split_domain_port, validate_host

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]

_endpoints: dict[str, ASGIApp] = {}


def register(app: ASGIApp, *paths: str) -> None:
    for path in paths:
        _endpoints[path] = app


class HTTPRouter:
    """Registered paths to their application, every other request to Django."""

    def __init__(self, django_app: ASGIApp) -> None:
        self.django_app = django_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = _endpoints.get(scope.get("path", "")) if scope["type"] == "http" else None
        await (app or self.django_app)(scope, receive, send)


def header_map(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name (a repeated header: its last value)."""
    return {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in scope.get("headers", [])
    }


def is_secure(scope: Scope, headers: dict[str, str]) -> bool:
    """As Django's `request.is_secure()`, with its SECURE_PROXY_SSL_HEADER setting."""
    proxy = settings.SECURE_PROXY_SSL_HEADER
    if proxy:
        name, secure_value = proxy
        header = name.removeprefix("HTTP_").replace("_", "-").lower()
        if header in headers:
            return headers[header].split(",", 1)[0].strip() == secure_value
    return scope.get("scheme") == "https"


def refusal(scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
    """Why Django would not serve this request (a host not in ALLOWED_HOSTS, plain
    HTTP where HTTPS is required), as (status, message); None when it would."""
    host = headers.get("host", "")
    if settings.USE_X_FORWARDED_HOST and "x-forwarded-host" in headers:
        host = headers["x-forwarded-host"]
    domain, _port = split_domain_port(host)
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]  # as Django does
    if not domain or not validate_host(domain, allowed):
        return 400, f"The host {host!r} is not served here (ALLOWED_HOSTS)."
    if settings.SECURE_SSL_REDIRECT and not is_secure(scope, headers):
        return 403, "This endpoint answers over HTTPS only."
    return None


def security_headers(scope: Scope, headers: dict[str, str]) -> dict[str, str]:
    """What Django's SecurityMiddleware adds to a response, for these endpoints."""
    added = {"X-Content-Type-Options": "nosniff"}
    if settings.SECURE_HSTS_SECONDS and is_secure(scope, headers):
        value = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            value += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            value += "; preload"
        added["Strict-Transport-Security"] = value
    return added
