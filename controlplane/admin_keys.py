"""Admin fields that refuse a posted value that cannot be a key, with the form's own
error, before the database sees it: Django's autocomplete widget looks up whatever was
posted when it re-renders a refused form (`model=abc`), and its multiple-choice field
sends a number past the key's range to the database (an OverflowError on SQLite).
Use `KeyedFieldsMixin` on a ModelAdmin or an inline with relations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django import forms
from django.contrib.admin.widgets import AutocompleteSelect, AutocompleteSelectMultiple
from django.core.exceptions import ValidationError
from django.db import connections
from django.db.models import ForeignKey, ManyToManyField
from django.http import HttpRequest


class KeyedAutocompleteSelect(AutocompleteSelect):
    """An autocomplete widget that re-renders a refused form without the values that
    cannot be keys: Django's own looks up whatever was posted (`model=abc`) and fails
    with a 500 instead of showing the form's error."""

    def optgroups(
        self, name: str, value: Sequence[str], attr: dict[str, Any] | None = None
    ) -> list[tuple[str | None, list[dict[str, Any]], int | None]]:
        return super().optgroups(name, _keys_only(self.field, value, self.db), attr)


class KeyedAutocompleteSelectMultiple(AutocompleteSelectMultiple):
    def optgroups(
        self, name: str, value: Sequence[str], attr: dict[str, Any] | None = None
    ) -> list[tuple[str | None, list[dict[str, Any]], int | None]]:
        return super().optgroups(name, _keys_only(self.field, value, self.db), attr)


def _keys_only(field: Any, values: Sequence[str], using: str | None) -> list[str]:
    remote = field.remote_field
    meta = remote.model._meta
    name = getattr(remote, "field_name", None)
    key = meta.get_field(name) if name else meta.pk
    return [value for value in values if _is_key(key, value, using or "default")]


def _is_key(key: Any, value: Any, using: str) -> bool:
    try:
        key.to_python(value)
    except ValidationError:
        return False
    return _fits_the_key(key, value, using)


class KeyedFieldsMixin:
    def formfield_for_foreignkey(
        self, db_field: ForeignKey[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> forms.ModelChoiceField[Any] | None:
        model_admin: Any = self
        if "widget" not in kwargs and db_field.name in model_admin.get_autocomplete_fields(request):
            kwargs["widget"] = KeyedAutocompleteSelect(
                db_field, model_admin.admin_site, using=kwargs.get("using")
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)  # type: ignore[misc]

    def formfield_for_manytomany(
        self,
        db_field: ManyToManyField[Any, Any],
        request: HttpRequest | None = None,
        **kwargs: Any,
    ) -> forms.ModelMultipleChoiceField[Any] | None:
        model_admin: Any = self
        if "widget" not in kwargs and db_field.name in model_admin.get_autocomplete_fields(request):
            kwargs["widget"] = KeyedAutocompleteSelectMultiple(
                db_field, model_admin.admin_site, using=kwargs.get("using")
            )
        kwargs.setdefault("form_class", KeyedModelMultipleChoiceField)
        return super().formfield_for_manytomany(db_field, request, **kwargs)  # type: ignore[misc]


class KeyedModelMultipleChoiceField(forms.ModelMultipleChoiceField):
    def _check_values(self, value: Any) -> Any:
        queryset: Any = self.queryset
        meta = queryset.model._meta
        key = meta.get_field(self.to_field_name) if self.to_field_name else meta.pk
        for posted in value:
            if not _fits_the_key(key, posted, queryset.db):
                raise ValidationError(
                    self.error_messages["invalid_pk_value"],
                    code="invalid_pk_value",
                    params={"pk": posted},
                )
        return super()._check_values(value)  # type: ignore[misc]


def _fits_the_key(key: Any, posted: Any, using: str) -> bool:
    try:
        python = key.to_python(posted)
    except ValidationError:
        return True  # Django's own check names it
    if not isinstance(python, int):
        return True
    low, high = connections[using].ops.integer_field_range(key.get_internal_type())
    return (low is None or python >= low) and (high is None or python <= high)
