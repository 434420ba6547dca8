"""Autocomplete fields that survive a refused form: use `KeyedAutocompleteMixin` on
any ModelAdmin or inline with `autocomplete_fields`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.contrib.admin.widgets import AutocompleteSelect, AutocompleteSelectMultiple
from django.core.exceptions import ValidationError
from django.http import HttpRequest


class KeyedAutocompleteSelect(AutocompleteSelect):
    """An autocomplete widget that re-renders a refused form without the values that
    cannot be keys: Django's own looks up whatever was posted (`model=abc`) and fails
    with a 500 instead of showing the form's error."""

    def optgroups(
        self, name: str, value: Sequence[str], attr: dict[str, Any] | None = None
    ) -> list[tuple[str | None, list[dict[str, Any]], int | None]]:
        return super().optgroups(name, _keys_only(self.field, value), attr)


class KeyedAutocompleteSelectMultiple(AutocompleteSelectMultiple):
    def optgroups(
        self, name: str, value: Sequence[str], attr: dict[str, Any] | None = None
    ) -> list[tuple[str | None, list[dict[str, Any]], int | None]]:
        return super().optgroups(name, _keys_only(self.field, value), attr)


def _keys_only(field: Any, values: Sequence[str]) -> list[str]:
    remote = field.remote_field
    key = remote.model._meta.get_field(getattr(remote, "field_name", None) or "pk")
    kept = []
    for value in values:
        try:
            key.to_python(value)
        except ValidationError:
            continue
        kept.append(value)
    return kept


class KeyedAutocompleteMixin:
    """Use on any ModelAdmin or inline with `autocomplete_fields`."""

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        model_admin: Any = self
        if "widget" not in kwargs and db_field.name in model_admin.get_autocomplete_fields(request):
            kwargs["widget"] = KeyedAutocompleteSelect(
                db_field, model_admin.admin_site, using=kwargs.get("using")
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)  # type: ignore[misc]

    def formfield_for_manytomany(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        model_admin: Any = self
        if "widget" not in kwargs and db_field.name in model_admin.get_autocomplete_fields(request):
            kwargs["widget"] = KeyedAutocompleteSelectMultiple(
                db_field, model_admin.admin_site, using=kwargs.get("using")
            )
        return super().formfield_for_manytomany(db_field, request, **kwargs)  # type: ignore[misc]
