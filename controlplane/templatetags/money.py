"""`{{ amount|usd }}`: money in templates, through the one formatter of `controlplane.money`,
which chooses the precision by magnitude (no places argument, so every page reads alike).
`{{ amount|usd_exact }}` is the amount to its last digit, for a title on hover."""

from __future__ import annotations

from decimal import Decimal

from django import template

from controlplane.money import exact_text, to_decimal
from controlplane.money import usd as usd_text

register = template.Library()


@register.filter
def usd(amount: Decimal | int | float | str | None) -> str:
    # Floats (a template's arithmetic) through their repr, as `to_decimal` does.
    return usd_text(_amount(amount))


@register.filter
def usd_exact(amount: Decimal | int | float | str | None) -> str:
    value = _amount(amount)
    return "" if value is None or not value.is_finite() else f"${exact_text(value)}"


def _amount(amount: Decimal | int | float | str | None) -> Decimal | None:
    try:
        return to_decimal(amount)
    except ArithmeticError:
        return None  # not an amount (a template's typo): shown as none, never a 500
