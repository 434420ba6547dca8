from __future__ import annotations

from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "routing"
    verbose_name = "Routing"
    # Tier permissions beyond "see everything" (see controlplane.tiers).
    operator_permissions = ("dismiss_recommendation",)

    def ready(self) -> None:
        from django.db.models.signals import m2m_changed, post_delete, post_save

        from controlplane.metrics import register_section
        from controlplane.status_sections import register_status_section
        from routing import budgets, home_cards, metrics, snapshots
        from routing.models import (
            AIModel,
            Budget,
            Policy,
            Provider,
            Route,
            RouteFallback,
            ServiceKey,
        )

        for model in (Route, RouteFallback, Policy, AIModel, Provider, Budget, ServiceKey):
            post_save.connect(
                snapshots.invalidate, sender=model, dispatch_uid=f"route-cache-{model.__name__}"
            )
            post_delete.connect(
                snapshots.invalidate, sender=model, dispatch_uid=f"route-cache-del-{model.__name__}"
            )
        m2m_changed.connect(
            snapshots.invalidate, sender=Route.fallbacks.through, dispatch_uid="route-cache-m2m"
        )
        register_section("routing", metrics.scrape)
        register_status_section("spend", budgets.status_lines, order=30)
        home_cards.register()  # today's spend and the last hour's calls on Home
