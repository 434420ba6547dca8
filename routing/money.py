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


def usd(amount: Decimal | None, places: int = 6) -> str:
    if amount is None:
        return "—"
    return f"${amount.quantize(Decimal(1).scaleb(-places)):,}"
