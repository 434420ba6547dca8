from __future__ import annotations

from django.apps import AppConfig


class SelfhealConfig(AppConfig):
    name = "selfheal"
    verbose_name = "Self-heal"
    # Tier permissions beyond "see everything" (see controlplane.tiers).
    operator_permissions = ("run_playbook", "rollback_execution", "operate_task")

    def ready(self) -> None:
        from django.urls import path

        from controlplane import websockets
        from selfheal import engine, playbooks
        from selfheal.consumers import SelfhealConsumer

        websockets.register(path("ws/selfheal/", SelfhealConsumer.as_asgi()))

        # Whichever process decides an unblock approval puts its task back or cancels it.
        engine.register_waiters()
        # Approved over-cap repairs, and the worker's "playbook.run" task kind.
        playbooks.connect()
