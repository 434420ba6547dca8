from __future__ import annotations

from django.apps import AppConfig


class SelfhealConfig(AppConfig):
    name = "selfheal"
    verbose_name = "Self-heal"
    # Tier permissions beyond "see everything" (see controlplane.tiers).
    operator_permissions = ("run_playbook", "rollback_execution", "operate_task")

    def ready(self) -> None:
        from controlplane.metrics import register_section
        from controlplane.status_sections import register_status_section
        from selfheal import dashboard, home_cards, metrics, playbooks, unblock

        # Whichever process decides an unblock approval puts its task back or cancels it.
        unblock.register_waiters()
        # Approved over-cap repairs, and the worker's "playbook.run" task kind.
        playbooks.connect()
        register_section("selfheal", metrics.scrape)
        register_status_section("engine", dashboard.status_lines, order=40)
        home_cards.register()  # the engine card and the diagnosis' verdict on Home
