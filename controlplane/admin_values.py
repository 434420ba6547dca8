"""Values in the operator panel as the product's pages show them, by field type.

Django's admin shows a `MoneyField` as its raw decimal (`0.000000800000000000`, no
unit) and a time as a long sentence (`Dec. 3, 2026, 6:03:19 p.m.`) that widens every
list. `ControlPlaneAdminSite` gives every ModelAdmin `ReadableValuesMixin`, so each
money field of any model, in a list or on a read-only page, goes through
`controlplane.money.usd` with its unit and the exact amount on hover, each time
reads `2026-12-03 18:03:19` in the site's zone with its ISO form on hover, and a long
text in a list is cut short with the whole of it on hover, so lists fit the screen. Nobody
lists fields by hand: a new money field is formatted the day it is added.

A ModelAdmin states a unit for prices that are not plain amounts in `money_units`
(a per-token price reads per 1M tokens, as providers quote it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator, capfirst

from controlplane.money import MoneyField, exact_text, usd, usd_per

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# A list cell shows this much of a text field that may hold more than LONG_TEXT_LENGTH.
LIST_TEXT_CHARS = 60
LONG_TEXT_LENGTH = 100


@dataclass(frozen=True)
class MoneyUnit:
    """What a stored price is per, and how many of those it is shown per."""

    stored_per: str  # "token"
    shown_per: str = ""  # "1M tokens"; empty: shown per what it is stored per
    quantity: int = 1


PER_MILLION_TOKENS = MoneyUnit("token", "1M tokens", 1_000_000)
PER_MILLION_CHARACTERS = MoneyUnit("character", "1M characters", 1_000_000)


def money_html(amount: Decimal | None, unit: MoneyUnit | None = None) -> str:
    """An amount as the product shows it, its exact value on hover."""
    if amount is None:
        return usd(None)
    exact = f"${exact_text(amount)}" + (f" per {unit.stored_per}" if unit else "")
    shown = usd_per(amount, unit.quantity) if unit else usd(amount)
    return format_html('<span class="money" title="{}">{}</span>', exact, shown)


def money_text(amount: Decimal | None, unit: MoneyUnit) -> str:
    """A unit price in a sentence: `$0.80/1M tokens`."""
    return f"{usd_per(amount, unit.quantity)}/{unit.shown_per or unit.stored_per}"


def time_html(moment: Any) -> str:
    if moment is None:
        return "—"
    local = timezone.localtime(moment) if timezone.is_aware(moment) else moment
    # Two unbreakable halves: a narrow column puts the time under the date, whole.
    day, _, clock = local.strftime(TIME_FORMAT).partition(" ")
    return format_html(
        '<time datetime="{}" title="{}"><span>{}</span> <span>{}</span></time>',
        moment.isoformat(),
        local.isoformat(),
        day,
        clock,
    )


def shortened_html(text: str | None) -> str:
    """A long text in a list cell: its start, the whole of it on hover."""
    if not text:
        return text or ""
    if len(text) <= LIST_TEXT_CHARS:
        return text
    return format_html('<span title="{}">{}</span>', text, Truncator(text).chars(LIST_TEXT_CHARS))


def _is_long_text(field: Any) -> bool:
    if isinstance(field, models.TextField):
        return True
    return isinstance(field, models.CharField) and (field.max_length or 0) >= LONG_TEXT_LENGTH


class ReadableValuesMixin:
    """Money and times in lists and read-only pages of a ModelAdmin, formatted by type."""

    model: type[models.Model]
    # `money_units` (a dict of field name to MoneyUnit) is read from the ModelAdmin,
    # which the site puts after this mixin: a default here would hide it.

    def get_list_display(self, request: HttpRequest) -> Sequence[Any]:
        shown = super().get_list_display(request)  # type: ignore[misc]
        return [self.readable(name, in_list=True) for name in shown]

    def get_list_display_links(self, request: HttpRequest, list_display: Sequence[Any]) -> Any:
        links = super().get_list_display_links(request, list_display)  # type: ignore[misc]
        return links if links is None else [self.readable(name, in_list=True) for name in links]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Sequence[Any]:
        return [self.readable(name) for name in super().get_readonly_fields(request, obj)]  # type: ignore[misc]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)  # type: ignore[misc]
        # A page shown read-only (the viewer may not change it) renders every field as
        # a value; an editable one keeps its inputs and formats its read-only fields.
        view_only = obj is not None and not self.has_change_permission(request, obj)  # type: ignore[attr-defined]
        read_only = list(self.get_readonly_fields(request, obj))

        def shown(name: Any) -> Any:
            column = self.readable(name)
            return column if view_only or column in read_only else name

        def line(fields: Any) -> Any:
            return (
                type(fields)(map(shown, fields))
                if isinstance(fields, list | tuple)
                else shown(fields)
            )

        return [
            (name, {**options, "fields": [line(fields) for fields in options["fields"]]})
            for name, options in fieldsets
        ]

    def readable(self, name: Any, *, in_list: bool = False) -> Any:
        """`name`'s formatted column, when it names a money or time field (or, in a
        list, a long text); else `name`. The same function each time: the admin
        matches read-only fields by identity."""
        if not isinstance(name, str):
            return name
        columns: dict[tuple[str, bool], Any] = self.__dict__.setdefault("_readable_columns", {})
        if (name, in_list) not in columns:
            columns[name, in_list] = self._column(name, in_list) or name
        return columns[name, in_list]

    def _column(self, name: str, in_list: bool) -> Callable[[Any], str] | None:
        try:
            field = self.model._meta.get_field(name)
        except FieldDoesNotExist:
            return None
        if not field.concrete or getattr(field, "choices", None):
            return None
        label = capfirst(str(field.verbose_name))
        if isinstance(field, MoneyField):
            unit = getattr(self, "money_units", {}).get(name)
            if unit is not None:
                label = f"{label} /{unit.shown_per or unit.stored_per}"
            return _named(name, label, lambda obj: money_html(getattr(obj, name), unit))
        if isinstance(field, models.DateTimeField):
            return _named(name, label, lambda obj: time_html(getattr(obj, name)))
        if in_list and _is_long_text(field):
            return _named(name, label, lambda obj: shortened_html(getattr(obj, name)))
        return None


def _named(name: str, label: str, show: Callable[[Any], str]) -> Callable[[Any], str]:
    def column(obj: Any) -> str | SafeString:
        return show(obj)

    # The admin names a column's CSS class and its help text after `__name__`.
    column.__name__ = name
    column.short_description = label  # type: ignore[attr-defined]
    column.admin_order_field = name  # type: ignore[attr-defined]
    return column
