from __future__ import annotations

from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Chat"
    # Tier permissions beyond "see everything" (see controlplane.tiers).
    operator_permissions = ("operate_run",)

    def ready(self) -> None:
        from chat import bot_runs, home_cards, metrics, runs, tools
        from controlplane.metrics import register_section

        tools.register_builtin_tools()
        runs.register_approval_waiters()
        register_section("chat", metrics.scrape)
        bot_runs.register()  # /run, /stop and the runs in /status
        home_cards.register()  # the runs card on Home
