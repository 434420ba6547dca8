"""System checks run at start-up (`bin/manage check`, which the run command calls)."""

from __future__ import annotations

from typing import Any

from django.core.checks import Error
from django.core.checks import register as register_check
from django.db import DatabaseError, connection


def critical_toggles(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    from django.conf import settings

    from controlplane.models import FeatureToggle

    if FeatureToggle._meta.db_table not in connection.introspection.table_names():
        return []  # not migrated yet: `migrate` runs the checks before creating tables
    try:
        toggles = {t.key: t for t in FeatureToggle.objects.all()}
    except DatabaseError as exc:
        return [Error(f"Could not read feature toggles: {exc}", id="controlplane.E000")]
    errors = []
    for key, required in settings.CRITICAL_TOGGLES.items():
        state = "on" if required else "off"
        toggle = toggles.get(key)
        if toggle is None:
            errors.append(
                Error(
                    f"Critical feature toggle '{key}' does not exist.",
                    hint=f"Create it {state} in the admin, or run 'bin/manage migrate'.",
                    id="controlplane.E001",
                )
            )
        elif toggle.enabled != required:
            errors.append(
                Error(
                    f"Critical feature toggle '{key}' must be {state}.",
                    hint=f"Turn it {state} in the admin (Control > Feature toggles).",
                    id="controlplane.E002",
                )
            )
    for key, toggle in toggles.items():
        if toggle.critical and key not in settings.CRITICAL_TOGGLES:
            errors.append(
                Error(
                    f"Feature toggle '{key}' is marked critical but CRITICAL_TOGGLES gives no "
                    "required state for it.",
                    hint=f"Add '{key}=on' or '{key}=off' to CRITICAL_TOGGLES, or unmark it.",
                    id="controlplane.E003",
                )
            )
    return errors


def encryption_keys(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Each ENCRYPTION_KEYS entry must be a Fernet key: a bad one would otherwise
    surface as a failure on the first secret read or written."""
    from cryptography.fernet import Fernet
    from django.conf import settings

    errors = []
    for position, key in enumerate(settings.ENCRYPTION_KEYS, start=1):
        try:
            Fernet(key.encode())
        except (ValueError, TypeError):
            errors.append(
                Error(
                    f"ENCRYPTION_KEYS entry {position} is not a Fernet key.",
                    hint="Each key is 32 url-safe base64-encoded bytes; make one with "
                    '`python -c "from cryptography.fernet import Fernet; '
                    'print(Fernet.generate_key().decode())"`.',
                    id="controlplane.E010",
                )
            )
    return errors


def register() -> None:
    register_check(critical_toggles, "controlplane")
    register_check(encryption_keys, "controlplane")
