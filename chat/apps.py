from __future__ import annotations

from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Chat"
    # Tier permissions beyond "see everything" (see controlplane.tiers).
    operator_permissions = ("operate_run",)

    def ready(self) -> None:
        from django.urls import path

        from chat import agent, tools
        from chat.consumers import RunConsumer
        from controlplane import websockets

        tools.register_builtin_tools()
        agent.register_approval_waiters()
        websockets.register(path("ws/runs/<int:run_id>/", RunConsumer.as_asgi()))
