"""Money in the routing app: Decimal USD, never float.

Enough places for per-token prices (OpenRouter quotes e.g. 0.000000075 USD a token)
and for provider-reported costs to be stored to their last digit.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from django.db import models

PLACES = 18
DIGITS = 30
ZERO = Decimal(0)


def money_field(**kwargs: Any) -> models.DecimalField:
    return models.DecimalField(max_digits=DIGITS, decimal_places=PLACES, **kwargs)


def to_decimal(value: Any) -> Decimal | None:
    """A price or cost from JSON or text, exactly: floats go through their repr."""
    if value is None or value == "":
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(str(value))


def loads_exact(text: str | bytes) -> Any:
    """json.loads keeping every number's digits (costs are never floats)."""
    return json.loads(text, parse_float=Decimal)


def dumps_exact(value: Any) -> str:
    """JSON text in which Decimals are written as exact numbers (json.dumps cannot)."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict):
        return (
            "{" + ",".join(f"{json.dumps(str(k))}:{dumps_exact(v)}" for k, v in value.items()) + "}"
        )
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps_exact(v) for v in value) + "]"
    return json.dumps(value)


# Money as people read it: every amount shown anywhere goes through one of these.


def dollars(amount: Decimal) -> str:
    """`$10.00`, `$0.000075`: cents at least, every significant digit kept."""
    exact = amount.normalize()
    exponent = exact.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        exact = exact.quantize(Decimal("0.01"))
    return f"${exact:,f}"


def usd(amount: Decimal | None, places: int = 6) -> str:
    """`$1,234.500000`: rounded to `places`, for columns and sentences that compare
    amounts side by side; "—" for none."""
    if amount is None:
        return "—"
    return f"${amount.quantize(Decimal(1).scaleb(-places)):,}"


def exact_text(amount: Decimal) -> str:
    """An amount for JSON and events: `0.5`, a string, so no digit is lost to a float."""
    return format(Decimal(amount).normalize(), "f")
