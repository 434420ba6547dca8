"""Websocket URL routes of the whole product.

The core owns the list; each app adds its consumers from its AppConfig.ready()
(DESIGN.md: nothing imports chat or healthmon, they register themselves here).
asgi.py builds the router after Django is set up, so every app has registered.
"""

from __future__ import annotations

from django.urls import URLPattern, path

from controlplane.consumers import HomeConsumer

websocket_urlpatterns: list[URLPattern] = [
    path("ws/home/", HomeConsumer.as_asgi()),
]


def register(*routes: URLPattern) -> None:
    for route in routes:
        if all(str(r.pattern) != str(route.pattern) for r in websocket_urlpatterns):
            websocket_urlpatterns.append(route)
