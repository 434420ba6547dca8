from __future__ import annotations

from django.apps import AppConfig


class HealthmonConfig(AppConfig):
    name = "healthmon"
    verbose_name = "Health"
    # A product app whose models, when it has some, every tier sees and Owners change.
    operator_permissions = ()
