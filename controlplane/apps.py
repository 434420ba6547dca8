from __future__ import annotations

from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig


class ControlplaneConfig(AppConfig):
    name = "controlplane"
    verbose_name = "Control plane"
    # Tier permissions beyond "see everything" (see controlplane.tiers).
    operator_permissions = ("decide_approval", "request_approval")

    def ready(self) -> None:
        from django.db.backends.signals import connection_created
        from django.db.models.signals import post_migrate

        from controlplane import (
            account_audit,
            chat_approvals,  # noqa: F401  (approval buttons; edits on approval_changed)
            chat_channel,
            chat_commands,  # noqa: F401  (registers the core's chat commands)
            checks,
            discord_integration,
            github_integration,
            metrics,
            money,
            status_sections,  # noqa: F401  (registers /status and its approvals section)
            telegram_integration,
            tiers,
        )
        from controlplane.approvals import register_waiter
        from controlplane.home import core_cards
        from controlplane.toggle_changes import ACTION, apply_toggle_change

        # Exact money on SQLite: its Decimal functions on every connection.
        connection_created.connect(
            money.register_sqlite_functions, dispatch_uid="controlplane-money-sqlite"
        )
        checks.register()
        metrics.connect_process_exit()
        account_audit.connect()
        register_waiter(ACTION, apply_toggle_change)
        # The GitHub kind is the core's own (its client is used by several apps).
        github_integration.register()
        telegram_integration.register()
        discord_integration.register()
        chat_channel.register()
        core_cards.register()  # Home's System health, approvals, toggles, changes
        post_migrate.connect(tiers.sync_tier_permissions, dispatch_uid="sync_tier_permissions")


class ControlplaneAdminConfig(AdminConfig):
    default_site = "controlplane.admin_site.ControlPlaneAdminSite"
