from __future__ import annotations

from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Chat"

    def ready(self) -> None:
        from django.urls import path

        from chat import runs, tools
        from chat.consumers import RunConsumer
        from controlplane import websockets

        tools.register_builtin_tools()
        runs.register_approval_waiters()
        websockets.register(path("ws/runs/<int:run_id>/", RunConsumer.as_asgi()))
