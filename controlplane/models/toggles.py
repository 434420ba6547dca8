from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import connection, models, transaction
from django.urls import reverse

from controlplane import audit

log = logging.getLogger(__name__)

_MISSING = "missing"


class ToggleLocked(ValidationError):
    """A locked toggle cannot be changed by anyone, superusers included."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f"Feature toggle '{key}' is locked and cannot be changed by anyone. "
            f"A server administrator can unlock it with "
            f"'bin/manage toggle unlock {key} --reason ...'."
        )
        self.key = key


class FeatureToggleQuerySet(audit.AuditedQuerySet):
    # Bulk paths check for locked rows before opening their transaction, so the
    # refusal is written at once rather than by a thread (audit.record_refusal).
    def _refuse_locked(self, **changes: Any) -> None:
        for toggle in self.filter(locked=True)[:1]:
            for name, value in changes.items():
                setattr(toggle, name, value)
            toggle.refuse_if_locked()

    def update(self, **kwargs: Any) -> int:
        self._refuse_locked(**kwargs)
        return super().update(**kwargs)

    def delete(self) -> tuple[int, dict[str, int]]:
        self._refuse_locked()
        return super().delete()

    def bulk_update(self, objs: Any, fields: Any, batch_size: int | None = None) -> int:
        for obj in objs:
            obj.refuse_if_locked()
        return super().bulk_update(objs, fields, batch_size)

    def unlock(self, key: str, *, reason: str) -> FeatureToggle:
        """The one way to unlock: a deliberate, audited act from the server's shell."""
        if not reason.strip():
            raise ValidationError("Unlocking a toggle needs a reason.")
        with transaction.atomic():
            _allow_unlocking_in_this_transaction()
            toggle = self.select_for_update().get(key=key)
            before = audit.snapshot(toggle)
            models.QuerySet.update(self.filter(pk=toggle.pk), locked=False)
            toggle.refresh_from_db()
            audit.record(
                "featuretoggle.unlocked",
                toggle,
                before={"locked": before["locked"]},
                after={"locked": False, "reason": reason},
            )
            toggle.invalidate_cache()
        return toggle


def _allow_unlocking_in_this_transaction() -> None:
    """PostgreSQL's trigger refuses every change to a locked toggle except unlocking it
    in a transaction that sets this (migration 0007); the setting ends with it."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('controlplane.toggle_unlock', 'on', true)")


class FeatureToggle(audit.AuditedModel):
    key = models.CharField(
        max_length=100,
        unique=True,
        validators=[RegexValidator(r"^[a-z0-9_.-]+$", "Use lowercase letters, digits, . _ and -.")],
    )
    enabled = models.BooleanField(default=False)
    locked = models.BooleanField(
        default=False, help_text="A locked toggle cannot be changed by anyone, superusers included."
    )
    critical = models.BooleanField(
        default=False,
        help_text="The app refuses to start unless this toggle is in its required state "
        "(CRITICAL_TOGGLES).",
    )
    description = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = FeatureToggleQuerySet.as_manager()  # type: ignore[misc]

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key

    def get_absolute_url(self) -> str:
        """Its row on the Toggles page."""
        return f"{reverse('toggles')}#toggle-{self.key}"

    @staticmethod
    def cache_key(key: str) -> str:
        return f"toggle:{key}"

    def invalidate_cache(self, *, deleted: bool = False) -> None:
        """Publish the committed state to the cache, which every process shares.

        The new state is written (not merely deleted) and readers only `add`, so a
        reader that fetched the old row just before the commit cannot put it back.
        """
        key, state = self.cache_key(self.key), _MISSING if deleted else self.enabled
        transaction.on_commit(lambda: cache.set(key, state, settings.TOGGLE_CACHE_SECONDS))

    def is_locked_in_database(self) -> bool:
        if self.pk is None:
            return False
        return FeatureToggle._base_manager.filter(pk=self.pk, locked=True).exists()

    def refuse_if_locked(self) -> None:
        if self.is_locked_in_database():
            log.warning("refused a change to locked toggle %s", self.key)
            audit.record_refusal(
                "featuretoggle.change_refused",
                self,
                after={"enabled": self.enabled, "locked": self.locked},
            )
            raise ToggleLocked(self.key)

    def clean(self) -> None:
        self.refuse_if_locked()

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.refuse_if_locked()
        old_key = (
            None
            if self._state.adding
            else FeatureToggle._base_manager.filter(pk=self.pk)
            .values_list("key", flat=True)
            .first()
        )
        super().save(*args, **kwargs)
        self.invalidate_cache()
        if old_key is not None and old_key != self.key:
            transaction.on_commit(lambda: cache.delete(self.cache_key(old_key)))

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        self.refuse_if_locked()
        result = super().delete(*args, **kwargs)
        self.invalidate_cache(deleted=True)
        return result


def toggle_enabled(key: str, default: bool = False) -> bool:
    """Whether the feature `key` is on. Cached; a missing toggle reads as `default`."""
    return toggles_enabled({key: default})[key]


def toggle_cache_keys(keys: Iterable[str]) -> list[str]:
    """The cache keys of these toggles: for a caller reading them with other keys."""
    return [FeatureToggle.cache_key(key) for key in keys]


def toggles_enabled(
    defaults: Mapping[str, bool], cached: Mapping[str, Any] | None = None
) -> dict[str, bool]:
    """Whether each feature is on, read from the cache at once (one round trip to
    Redis); a missing toggle reads as its default. `cached`: the cache's values of
    these toggles' keys (`toggle_cache_keys`) when the caller read them already, with
    other keys in the same round trip; a key it lacks was not in the cache."""
    cache_keys = {FeatureToggle.cache_key(key): key for key in defaults}
    cached = dict(cache.get_many(cache_keys) if cached is None else cached)
    missed = [key for cache_key, key in cache_keys.items() if cache_key not in cached]
    if missed:
        rows = dict(FeatureToggle.objects.filter(key__in=missed).values_list("key", "enabled"))
        for key in missed:
            value = bool(rows[key]) if key in rows else _MISSING
            cached[FeatureToggle.cache_key(key)] = value
            cache.add(FeatureToggle.cache_key(key), value, settings.TOGGLE_CACHE_SECONDS)
    states = {}
    for key, default in defaults.items():
        value = cached[FeatureToggle.cache_key(key)]
        states[key] = default if value == _MISSING else bool(value)
    return states
