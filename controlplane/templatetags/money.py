"""`{{ amount|usd:4 }}`: money in templates, through the one formatter of `controlplane.money`."""

from __future__ import annotations

from decimal import Decimal

from django import template

from controlplane.money import usd as usd_text

register = template.Library()


@register.filter
def usd(amount: Decimal | int | float | None, places: int = 6) -> str:
    if amount is None or amount == "":
        return usd_text(None)
    # Floats (a template's arithmetic) through their repr, as `to_decimal` does.
    return usd_text(Decimal(repr(amount)) if isinstance(amount, float) else Decimal(amount), places)
