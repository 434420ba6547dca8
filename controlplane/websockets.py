"""What a websocket handshake gets before a consumer sees it: the same-origin check
every socket passes, and the refusal at a path no consumer serves (the routes are in
`controlplane.asgi_routes`)."""

from __future__ import annotations

import io
import logging
from typing import Any
from urllib.parse import urlsplit

from channels.generic.websocket import AsyncWebsocketConsumer
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.utils.http import is_same_domain

log = logging.getLogger(__name__)

# Closed before accepting: the server answers the handshake with 403. The code is
# what a client would see had the connection been accepted: "not found", 4000 + 404.
NOT_FOUND = 4404

# A websocket's scheme as the page that opened it sees its own origin.
_PAGE_SCHEME = {"ws": "http", "wss": "https"}


def site_origin(scope: dict[str, Any]) -> str | None:
    """`scheme://host[:port]` of the site this handshake reached, as Django works it out
    for a request (Host checked against ALLOWED_HOSTS, USE_X_FORWARDED_HOST,
    SECURE_PROXY_SSL_HEADER), or None when the Host is not one the site answers to."""
    as_http = {
        **scope,
        "type": "http",
        "method": "GET",
        "scheme": _PAGE_SCHEME.get(scope.get("scheme", "ws"), "http"),
    }
    request = ASGIRequest(as_http, io.BytesIO())
    try:
        host = request.get_host()
    except DisallowedHost:
        return None
    return f"{'https' if request.is_secure() else 'http'}://{host}"


def trusted_origin(origin: str, scope: dict[str, Any]) -> bool:
    """Whether a page at `origin` may open this socket: the rule of Django's CSRF check
    for a form's Origin, so a socket is exactly as open as a POST. The site's own
    origin (scheme, host and port) or one of CSRF_TRUSTED_ORIGINS, whose `*.` entries
    admit subdomains. Channels' AllowedHostsOriginValidator compares the host name
    only, which lets a page on another port or scheme of the same host read the feeds.
    """
    if origin == site_origin(scope) or origin in settings.CSRF_TRUSTED_ORIGINS:
        return True
    try:
        parsed = urlsplit(origin)
    except ValueError:
        return False
    return any(
        is_same_domain(parsed.netloc, trusted.netloc.lstrip("*"))
        for trusted in map(urlsplit, settings.CSRF_TRUSTED_ORIGINS)
        if "*" in trusted.netloc and trusted.scheme == parsed.scheme
    )


class SameOriginValidator:
    """ASGI middleware refusing a websocket handshake (403) whose Origin header is
    missing or not trusted (`trusted_origin`). A browser always sends Origin, so a
    page elsewhere cannot ride the staff member's session cookie into the live feeds."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        origins = [value for name, value in scope.get("headers", []) if name == b"origin"]
        origin = origins[0].decode("latin1") if len(origins) == 1 else None
        if origin is not None and trusted_origin(origin, scope):
            return await self.application(scope, receive, send)
        # Behind a proxy that rewrites Host or terminates TLS, this line says which
        # setting is missing (BEHIND_PROXY, CSRF_TRUSTED_ORIGINS).
        log.warning(
            "websocket refused: origin %r is not this site's (%s)", origin, site_origin(scope)
        )
        return await WebsocketDenier.as_asgi()(scope, receive, send)


class NoSuchSocket(AsyncWebsocketConsumer):
    """Refuses the handshake cleanly, where Channels' router would raise (an HTTP 500
    and a logged traceback) for a path it has no route for."""

    async def connect(self) -> None:
        await self.close(code=NOT_FOUND)
