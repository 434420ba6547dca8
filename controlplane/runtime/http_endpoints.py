"""HTTP endpoints served beside Django's request path, straight from ASGI.

An endpoint that must add next to nothing to every request (the AI gateway, called
by other services for each model call) is a plain ASGI application for exact paths,
declared in `controlplane.asgi_routes`; `HTTPRouter` sends those paths to it and
everything else to Django. Such an endpoint does its own authentication: no
session, CSRF or other middleware runs for it. The host check and the HTTPS
requirement of the settings still apply (`refusal`), and every answer carries the
headers Django's `SecurityMiddleware` adds to the rest of the site
(`security_headers`), computed by that middleware itself.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.http.request import split_domain_port, validate_host
from django.middleware.security import SecurityMiddleware

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]


class HTTPRouter:
    """Requests for the endpoints' exact paths to their application, every other
    request to Django."""

    def __init__(self, django_app: ASGIApp, endpoints: Mapping[str, ASGIApp]) -> None:
        self.django_app = django_app
        self.endpoints = dict(endpoints)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self.endpoints.get(scope.get("path", "")) if scope["type"] == "http" else None
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
    """The headers Django's SecurityMiddleware adds to a response (nosniff,
    Referrer-Policy, Cross-Origin-Opener-Policy, and HSTS over HTTPS), for these
    endpoints. The same dict for every request: it is not to be changed."""
    return _security_headers(is_secure(scope, headers))


class _Request(HttpRequest):
    """A request that is secure or not, as `SecurityMiddleware` asks about HSTS."""

    def __init__(self, secure: bool) -> None:
        super().__init__()
        self._secure = secure

    def is_secure(self) -> bool:
        return self._secure


@functools.cache
def _security_headers(secure: bool) -> dict[str, str]:
    # The middleware itself decides, from the settings it reads, so the headers here
    # cannot drift from the rest of the site's. Its settings are read once, as Django
    # reads them once when it builds its middleware.
    bare = HttpResponse()
    before = set(bare.headers)
    middleware = SecurityMiddleware(lambda request: HttpResponse())
    response = middleware.process_response(_Request(secure), bare)
    return {name: value for name, value in response.headers.items() if name not in before}


@receiver(setting_changed)
def _forget_security_headers(*, setting: str, **kwargs: object) -> None:
    # Tests change the SECURE_* settings; Django rebuilds its middleware for them too.
    if setting.startswith("SECURE_"):
        _security_headers.cache_clear()
