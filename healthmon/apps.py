from __future__ import annotations

from django.apps import AppConfig


class HealthmonConfig(AppConfig):
    name = "healthmon"
    verbose_name = "Health"
