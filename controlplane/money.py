"""Money, in every app: Decimal USD, never float, exact on every database.

Enough places for per-token prices (OpenRouter quotes e.g. 0.000000075 USD a token)
and for provider-reported costs to be stored to their last digit: 30 digits, 18 of
them places.

PostgreSQL stores money as `numeric(30, 18)` and computes with it exactly. SQLite has
no exact numeric type (a "decimal" column is REAL there: 15 significant digits, and
SUM adds floats), so a `MoneyField` is a text column on SQLite holding canonical
fixed-point text (`stored_text`), and the SQL that adds, compares or sums money there
calls the Decimal functions this module registers on every SQLite connection
(`money_add`, `money_sub`, `money_cmp`, `money`, the aggregate `money_sum`; see
`MoneySum` and `routing.ledger`). The text's integer part is zero-padded, so that
where SQL still compares or orders money as text (a filter, a CHECK constraint, an
ORDER BY) text order is the amounts' order; all money here is zero or more.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any

from django import forms
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.sql.compiler import SQLCompiler

PLACES = 18
DIGITS = 30
ZERO = Decimal(0)
_QUANTUM = Decimal(1).scaleb(-PLACES)
# Precision for money arithmetic on SQLite: any sum of amounts, to the last place.
_EXACT = Context(prec=2 * DIGITS)
# The stored text's width: every integer digit, the point, every place.
_STORED_WIDTH = DIGITS + 1


class MoneyField(models.DecimalField):
    """A DecimalField of 30 digits, 18 places, stored exactly on every database."""

    description = "Money (USD), exact on every database"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max_digits", DIGITS)
        kwargs.setdefault("decimal_places", PLACES)
        super().__init__(*args, **kwargs)

    def deconstruct(self) -> Any:
        name, path, args, kwargs = super().deconstruct()
        if kwargs.get("max_digits") == DIGITS:
            del kwargs["max_digits"]
        if kwargs.get("decimal_places") == PLACES:
            del kwargs["decimal_places"]
        return name, path, args, kwargs

    def formfield(self, **kwargs: Any) -> Any:
        return super().formfield(**{"form_class": MoneyFormField, **kwargs})

    def db_type(self, connection: BaseDatabaseWrapper) -> str | None:
        if connection.vendor == "sqlite":
            return "text"
        return super().db_type(connection)

    def get_db_prep_value(
        self, value: Any, connection: BaseDatabaseWrapper, prepared: bool = False
    ) -> Any:
        if connection.vendor != "sqlite":
            return super().get_db_prep_value(value, connection, prepared)
        if not prepared:
            value = self.get_prep_value(value)
        if value is None or hasattr(value, "as_sql"):
            return value
        return stored_text(self.to_python(value))


class MoneyFormField(forms.DecimalField):
    """An amount's input shows it as a person types it (`5.00`, `0.0000008`), not as
    stored (`5.000000000000000000`); every digit is kept, so saving it unchanged
    changes nothing."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, Decimal) and value.is_finite():
            return input_text(value)
        return value

    def clean(self, value: Any) -> Any:
        # To the field's places, as the database gives it back: saving a form unchanged
        # leaves the same amount, digit for digit, for the audit's before and after.
        amount = super().clean(value)
        if isinstance(amount, Decimal) and self.decimal_places is not None:
            return amount.quantize(Decimal(1).scaleb(-self.decimal_places), context=_EXACT)
        return amount


def input_text(amount: Decimal) -> str:
    """`5.00`, `0.0000008`: cents at least, every significant digit, no separators."""
    exact = amount.normalize()
    exponent = exact.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        exact = exact.quantize(CENT, context=_EXACT)
    return format(exact, "f")


def money_field(**kwargs: Any) -> MoneyField:
    return MoneyField(**kwargs)


def stored_text(amount: Decimal) -> str:
    """`amount` as SQLite stores it: `000000000001.500000000000000000`."""
    return format(amount.quantize(_QUANTUM, context=_EXACT), f"0{_STORED_WIDTH}f")


class MoneySum(models.Sum):
    """`Sum()` of money, exact on both databases (SQLite's SUM would add floats)."""

    def as_sqlite(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra_context: Any
    ) -> tuple[str, Any]:
        # Not Django's SQLite wrapping (a CAST to NUMERIC, which makes a float of it).
        return self.as_sql(compiler, connection, function="money_sum", **extra_context)


# The Decimal functions of money on SQLite connections.


def _amount(value: str | int | float | None) -> Decimal | None:
    if value is None:
        return None
    # A float only from data stored before money was text: through its repr.
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def _money(value: str | int | float | None) -> str | None:
    amount = _amount(value)
    return None if amount is None else stored_text(amount)


def _money_add(a: str | int | float | None, b: str | int | float | None) -> str | None:
    x, y = _amount(a), _amount(b)
    return None if x is None or y is None else stored_text(_EXACT.add(x, y))


def _money_sub(a: str | int | float | None, b: str | int | float | None) -> str | None:
    x, y = _amount(a), _amount(b)
    return None if x is None or y is None else stored_text(_EXACT.subtract(x, y))


def _money_cmp(a: str | int | float | None, b: str | int | float | None) -> int | None:
    x, y = _amount(a), _amount(b)
    return None if x is None or y is None else int(x.compare(y))


class _MoneySumAggregate:
    def __init__(self) -> None:
        self.total: Decimal | None = None

    def step(self, value: str | int | float | None) -> None:
        amount = _amount(value)
        if amount is not None:
            self.total = amount if self.total is None else _EXACT.add(self.total, amount)

    def finalize(self) -> str | None:
        return None if self.total is None else stored_text(self.total)


def register_sqlite_functions(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """`connection_created` receiver: the money functions on each new SQLite connection."""
    if connection.vendor != "sqlite":
        return
    raw = connection.connection
    raw.create_function("money", 1, _money, deterministic=True)
    raw.create_function("money_add", 2, _money_add, deterministic=True)
    raw.create_function("money_sub", 2, _money_sub, deterministic=True)
    raw.create_function("money_cmp", 2, _money_cmp, deterministic=True)
    raw.create_aggregate("money_sum", 1, _MoneySumAggregate)


def canonical_text_on_sqlite(
    app_label: str, money: Mapping[str, Sequence[str]]
) -> Callable[[Any, Any], None]:
    """A migration's `RunPython` step for money columns that were REAL on SQLite.

    `money` maps each model name of `app_label` to its money fields. After the
    AlterFields to `MoneyField` made those columns text, they hold the REAL's text
    ("0.5", "7.5e-08"); the step rewrites every value as canonical money text with the
    `money()` SQL function. Other databases keep `numeric` and need nothing.
    """

    def rewrite(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor != "sqlite":
            return
        for model_name, fields in money.items():
            model = apps.get_model(app_label, model_name)
            table = schema_editor.quote_name(model._meta.db_table)
            for name in fields:
                column = schema_editor.quote_name(model._meta.get_field(name).column)
                schema_editor.execute(
                    f"UPDATE {table} SET {column} = money({column}) WHERE {column} IS NOT NULL"  # noqa: S608
                )

    return rewrite


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


class JsonText(str):
    """JSON text kept as it was written, for what is handed on rather than reckoned
    with: `dumps_exact` writes it as is. Read with `json.loads(...,
    parse_float=JsonText)`, a number keeps its text (`Decimal(number)` reads it
    exactly); an embedding's vector, hundreds or thousands of numbers, costs far less
    read and written back as text than as Decimals or floats."""

    __slots__ = ()


def dumps_exact(value: Any) -> str:
    """JSON text in which Decimals are written as exact numbers (json.dumps cannot),
    and `JsonText` as it was written; everything else as `json.dumps` writes it
    (ASCII, `,` and `:` without spaces).

    Every gateway answer goes through here, so the common values are written by the
    C functions `json.dumps` itself ends in (`_WRITERS`), without its per-call set-up:
    a Responses answer of some 40 values took 70 µs through `json.dumps`, a value at a
    time. A property test holds this to `json.dumps` for any value without Decimals."""
    write = _WRITERS.get(type(value))
    if write is not None:
        return write(value)
    if isinstance(value, Decimal):
        return _decimal_text(value)
    if isinstance(value, dict):
        return _object_text(value)
    if isinstance(value, list | tuple):
        return _array_text(value)
    if isinstance(value, JsonText):  # a kind of its own (an embedding's `VectorText`)
        return str.__str__(value)
    return json.dumps(value)


def _object_text(value: Mapping[Any, Any]) -> str:
    writers = _WRITERS
    return (
        "{"
        + ",".join(
            [
                f"{_quoted(k if type(k) is str else str(k))}:"
                f"{(writers.get(type(v)) or dumps_exact)(v)}"
                for k, v in value.items()
            ]
        )
        + "}"
    )


def _array_text(value: Sequence[Any]) -> str:
    # A list of numbers (an embedding's vector, hundreds of them) is written in one
    # go: a call a number was a third of what the gateway spent on the answer.
    if value and all(type(v) is Decimal for v in value):
        numbers = ",".join(map(str, value))
        if "E" not in numbers:  # else some need `format` to lose their exponent
            return f"[{numbers}]"
    writers = _WRITERS
    return "[" + ",".join([(writers.get(type(v)) or dumps_exact)(v) for v in value]) + "]"


def _decimal_text(value: Decimal) -> str:
    """`format(value, "f")`: every digit, never an exponent. `str` writes the same
    text four times faster unless it writes an exponent (a very small or very large
    number), which `format` then spells out."""
    text = str(value)
    return format(value, "f") if "E" in text else text


# What `json.dumps` writes for a str (ensure_ascii), in C.
_quoted: Callable[[str], str] = json.encoder.encode_basestring_ascii
_WRITERS: dict[type, Callable[[Any], str]] = {
    str: _quoted,
    int: int.__repr__,
    bool: lambda value: "true" if value else "false",
    type(None): lambda value: "null",
    dict: _object_text,
    list: _array_text,
    Decimal: _decimal_text,
    JsonText: str.__str__,
}


def dumps_built(value: Any) -> str:
    """What `dumps_exact` writes, for a value the gateway built itself, which holds no
    `JsonText`: a Responses or Messages answer, or one of their events. json's C
    encoder writes it in one pass, each Decimal marked there and written in after:
    half the time of `dumps_exact` on a Responses answer (7 µs against 14), which
    calls into Python for each container. The encoder would quote a `JsonText`, a
    `str` to it, so what a provider wrote goes through `dumps_exact`."""
    decimals: list[Decimal] = []

    def mark(number: Any) -> str:
        if not isinstance(number, Decimal):
            raise TypeError(f"Object of type {type(number).__name__} is not JSON serializable")
        decimals.append(number)
        return _DECIMAL_MARK

    encode = _c_make_encoder({}, mark, _quoted, None, ":", ",", False, False, True)
    text = "".join(encode(value, 0))
    if not decimals:
        return text
    pieces = text.split(_QUOTED_DECIMAL_MARK)
    if len(pieces) != len(decimals) + 1:
        return dumps_exact(value)  # a string of the value's is the mark itself
    written = [pieces[0]]
    for number, piece in zip(decimals, pieces[1:], strict=True):
        written += (_decimal_text(number), piece)
    return "".join(written)


# json's C encoder (`c_make_encoder`), as `json.dumps` makes it for one value: its
# markers (for cycles), default, string writer, indent, separators, sort_keys,
# skipkeys and allow_nan.
_c_make_encoder: Callable[..., Callable[[Any, int], Sequence[str]]] = json.encoder.c_make_encoder  # type: ignore[attr-defined]
# Where a Decimal goes, as the encoder writes it: a whole string no answer holds.
_DECIMAL_MARK = "\x00decimal\x00"
_QUOTED_DECIMAL_MARK = _quoted(_DECIMAL_MARK)


# Money as people read it: every amount shown anywhere goes through one of these.


def dollars(amount: Decimal) -> str:
    """`$10.00`, `$0.000075`: cents at least, every significant digit kept. Only where
    the figures of a sentence must add up to the last digit (a budget refusal's limit,
    spent and needed; the spend command's ledger); everything shown elsewhere is `usd`."""
    whole, _, fraction = input_text(abs(amount)).partition(".")
    return f"{'-' if amount < 0 else ''}${int(whole):,}.{fraction}"


CENT = Decimal("0.01")
# Below a dollar, amounts are shown to this many places; below a cent, to this many
# significant digits (a per-token price, one cheap call's cost).
SUB_DOLLAR_PLACES = 4
SUB_CENT_DIGITS = 3


def usd(amount: Decimal | int | float | None) -> str:
    """Money as people read it, anywhere it is shown: precision chosen by magnitude, so
    a column of amounts and a sentence read alike. "—" for none; `$0.00`;
    `$1,234.50` from a dollar up; `$0.25`, `$0.0123` below (4 places at most);
    `$0.000000812` below a cent (3 significant digits); `-$1.50`. Trailing zeros past
    the cents are dropped. Exact values travel as `exact_text` (JSON, events, titles)."""
    value = _shown_amount(amount)
    if value is None:
        return "—"
    sign = "-" if value < 0 else ""
    size = abs(value)
    if size < CENT:
        rounded = _rounded(size, SUB_CENT_DIGITS - 1 - size.adjusted()) if size else ZERO
        if rounded < CENT:
            return _with_sign(sign, rounded)
        size = rounded
    if size < 1:
        rounded = _rounded(size, SUB_DOLLAR_PLACES)
        if rounded < 1:
            return _with_sign(sign, rounded)
        size = rounded
    return _with_sign(sign, _rounded(size, 2))


def usd_per(amount: Decimal | None, quantity: int) -> str:
    """A unit price shown per `quantity` units (a per-token price per 1M tokens)."""
    value = _shown_amount(amount)
    return usd(None if value is None else value * quantity)


def _shown_amount(amount: Decimal | int | float | None) -> Decimal | None:
    if amount is None or isinstance(amount, bool):
        return None
    value = amount if isinstance(amount, Decimal) else to_decimal(amount)
    return value if value is not None and value.is_finite() else None


def _rounded(size: Decimal, places: int) -> Decimal:
    """`size` (zero or more) rounded half up to `places`, whatever its magnitude."""
    digits = max(size.adjusted(), 0) + places + 2
    return size.quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP, Context(prec=digits))


def _with_sign(sign: str, size: Decimal) -> str:
    if not size:
        return "$0.00"
    text = f"{size:,f}"
    whole, _, fraction = text.partition(".")
    fraction = fraction.rstrip("0").ljust(2, "0")
    return f"{sign}${whole}.{fraction}"


def exact_text(amount: Decimal) -> str:
    """An amount for JSON and events: `0.5`, a string, so no digit is lost to a float."""
    return format(Decimal(amount).normalize(), "f")
