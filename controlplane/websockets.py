"""Websocket URL routes of the whole product; each app adds its consumers here."""

from __future__ import annotations

from django.urls import path

from chat.consumers import RunConsumer
from controlplane.consumers import HomeConsumer
from selfheal.consumers import SelfhealConsumer

websocket_urlpatterns = [
    path("ws/home/", HomeConsumer.as_asgi()),
    path("ws/runs/<int:run_id>/", RunConsumer.as_asgi()),
    path("ws/selfheal/", SelfhealConsumer.as_asgi()),
]
