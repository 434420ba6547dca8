from __future__ import annotations

from django.apps import AppConfig


class SelfhealConfig(AppConfig):
    name = "selfheal"
    verbose_name = "Self-heal"
