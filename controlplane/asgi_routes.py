"""Every URL the product serves outside Django's URLconf: the `/v1` endpoints served
straight from ASGI, and the websocket routes. With `controlplane/urls.py` this is the
whole list of what the product answers.

This module is part of the composition root, as `controlplane/urls.py` and
`controlplane/asgi.py` are: the one place that puts the apps together. That is why it
may import chat, routing, selfheal and healthmon although the rest of the core must not
(DESIGN.md's dependency direction is about the core's own code, not the project's
ASGI and URL configuration). Only `controlplane.asgi` imports it, once Django is set up.
"""

from __future__ import annotations

from django.urls import URLPattern, path, re_path

from chat.consumers import RunConsumer, SessionConsumer, SessionsConsumer
from controlplane.home.consumer import HomeConsumer
from controlplane.runtime.http_endpoints import ASGIApp
from controlplane.websockets import NoSuchSocket
from healthmon.code_consumers import CodeHealthConsumer
from healthmon.consumers import HealthConsumer
from healthmon.otlp.receiver import LogReceiver
from routing.consumers import RoutingConsumer
from routing.gateway_asgi import GatewayApplication
from selfheal.consumers import SelfhealConsumer

# The gateway (OpenAI-compatible), for other services' AI calls; exact paths only.
_gateway = GatewayApplication()
http_endpoints: dict[str, ASGIApp] = {
    "/v1/chat/completions": _gateway,
    "/v1/responses": _gateway,
    "/v1/embeddings": _gateway,
    "/v1/audio/speech": _gateway,
    "/v1/models": _gateway,
    "/v1/messages": _gateway,  # Anthropic's Messages API
    "/v1/audio/transcriptions": _gateway,
    # OTLP/HTTP log export from other services (healthmon's receiver).
    "/v1/logs": LogReceiver(),
}

websocket_urlpatterns: list[URLPattern] = [
    path("ws/home/", HomeConsumer.as_asgi()),
    path("ws/runs/<int:run_id>/", RunConsumer.as_asgi()),
    path("ws/chat/sessions/", SessionsConsumer.as_asgi()),
    path("ws/chat/sessions/<int:session_id>/", SessionConsumer.as_asgi()),
    path("ws/selfheal/", SelfhealConsumer.as_asgi()),
    path("ws/routing/", RoutingConsumer.as_asgi()),
    path("ws/health/", HealthConsumer.as_asgi()),
    path("ws/health/code/", CodeHealthConsumer.as_asgi()),
    # Last: any other path (`/ws/runs/abc/` too) is refused at the handshake.
    re_path(r"", NoSuchSocket.as_asgi()),
]
