"""Websocket URL routes of the whole product; each app adds its consumers here."""

from __future__ import annotations

from django.urls import path

from controlplane.consumers import HomeConsumer

websocket_urlpatterns = [
    path("ws/home/", HomeConsumer.as_asgi()),
]
