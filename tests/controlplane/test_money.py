"""Money in the core: one module, exact on both databases and formatted in one place;
an approval's amount is money like any other."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from django.apps import apps
from django.db import connection
from django.template import Context, Template
from hypothesis import given
from hypothesis import strategies as st

from controlplane import money
from controlplane.approvals import request_approval
from controlplane.models import Approval
from controlplane.money import (
    JsonText,
    canonical_text_on_sqlite,
    dollars,
    dumps_built,
    dumps_exact,
    exact_text,
    loads_exact,
    stored_text,
    usd,
)

# 22 significant digits, 18 of them places: more than a float or a REAL keeps.
AMOUNT = Decimal("1234.567890123456789012")


def ask_for_money(requested_by: Any, amount: Decimal) -> Approval:
    return request_approval(
        action="model.call", requested_by=requested_by, reason="a costly call", amount=amount
    )


@pytest.mark.django_db
def test_an_approval_amount_keeps_every_digit_on_every_database(operator):
    approval = ask_for_money(operator, AMOUNT)

    assert Approval.objects.get(pk=approval.pk).amount == AMOUNT
    assert list(Approval.objects.filter(amount=AMOUNT)) == [approval]
    assert not Approval.objects.filter(amount=AMOUNT + Decimal("1e-18")).exists()


@pytest.mark.django_db
def test_sqlite_keeps_an_approval_amount_as_canonical_text(operator):
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL keeps money as numeric")
    approval = ask_for_money(operator, AMOUNT)

    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT amount FROM {Approval._meta.db_table} WHERE id = %s",  # noqa: S608
            [approval.pk],
        )
        assert cursor.fetchone() == ("000000001234.567890123456789012",)


class _SchemaEditor:
    """What a RunPython step uses of a schema editor, on the test's connection."""

    connection = connection

    def quote_name(self, name: str) -> str:
        return connection.ops.quote_name(name)

    def execute(self, sql: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute(sql)


@pytest.mark.django_db
def test_the_migration_step_rewrites_amounts_stored_as_real_as_canonical_text(operator):
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL kept money as numeric: nothing to rewrite")
    small, large = ask_for_money(operator, Decimal(1)), ask_for_money(operator, Decimal(1))
    table = Approval._meta.db_table
    with connection.cursor() as cursor:
        # What the AlterField left of REAL values: their text, "7.5e-08" and "12.5".
        cursor.execute(f"UPDATE {table} SET amount = 7.5e-08 WHERE id = %s", [small.pk])  # noqa: S608
        cursor.execute(f"UPDATE {table} SET amount = 12.5 WHERE id = %s", [large.pk])  # noqa: S608

    canonical_text_on_sqlite("controlplane", {"approval": ["amount"]})(apps, _SchemaEditor())

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, amount FROM {table} ORDER BY id")  # noqa: S608
        assert cursor.fetchall() == [
            (small.pk, stored_text(Decimal("7.5e-08"))),
            (large.pk, stored_text(Decimal("12.5"))),
        ]
    assert Approval.objects.get(pk=small.pk).amount == Decimal("0.000000075")


@pytest.mark.django_db
def test_the_approval_row_shows_the_amount_through_the_money_formatter(client, operator, owner):
    ask_for_money(operator, AMOUNT)
    client.force_login(owner)

    page = client.get("/approvals/").content.decode()

    assert f'<span class="badge warn">{usd(AMOUNT)}</span>' in page
    assert usd(AMOUNT) == "$1,234.57"


def test_stored_text_orders_as_the_amounts_do():
    amounts = [Decimal(text) for text in ("0", "0.000000000000000001", "0.5", "9", "10", "1e3")]

    assert sorted(amounts, key=stored_text) == amounts


def test_the_money_functions_compute_with_decimals():
    assert money._money_add("0.1", 0.2) == stored_text(Decimal("0.3"))
    assert money._money_sub("000000000001.000000000000000000", "1e-18") == stored_text(
        Decimal("0.999999999999999999")
    )
    assert money._money_cmp("10", "9.999999999999999999") == 1
    assert money._money_add(None, "1") is None


def test_amounts_read_as_people_read_them():
    assert dollars(Decimal("10")) == "$10.00"
    assert dollars(Decimal("0.000075")) == "$0.000075"
    assert usd(Decimal("1234.5")) == "$1,234.50"
    assert usd(None) == "—"
    assert exact_text(Decimal("0.500000000000000000")) == "0.5"


def test_templates_format_money_with_the_same_function():
    rendered = Template("{% load money %}{{ amount|usd }} {{ none|usd }}").render(
        Context({"amount": Decimal("0.12345"), "none": None})
    )

    assert rendered == f"{usd(Decimal('0.12345'))} —"


@given(
    value=st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.decimals(allow_nan=False, allow_infinity=False)
        | st.text(max_size=5),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=3), children, max_size=3)
        ),
        max_leaves=12,
    )
)
def test_exact_json_reads_back_as_the_same_numbers_and_values(value: object) -> None:
    assert loads_exact(dumps_exact(value)) == value


def json_trees(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Values JSON writes: `leaves` in lists, pairs (tuples) and objects."""
    return st.recursive(
        leaves,
        lambda children: (
            st.lists(children, max_size=4)
            | st.tuples(children, children)
            | st.dictionaries(st.text(max_size=4), children, max_size=4)
        ),
        max_leaves=16,
    )


@given(
    value=json_trees(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats()
        | st.decimals()
        | st.text(max_size=5)
        | st.just(money._DECIMAL_MARK)
    )
)
def test_a_value_built_here_is_written_as_dumps_exact_writes_it(value: object) -> None:
    """Decimals anywhere (NaN and exponents included), floats, text holding what the
    encoder marks a Decimal with: the same text, whichever writer."""
    assert dumps_built(value) == dumps_exact(value)


def test_a_value_built_here_refuses_what_json_cannot_write() -> None:
    with pytest.raises(TypeError, match="Object of type set is not JSON serializable"):
        dumps_built({"cost": Decimal("0.1"), "tags": {"a"}})


@given(value=json_trees(st.none() | st.booleans() | st.integers() | st.floats() | st.text()))
def test_without_decimals_exact_json_is_what_json_dumps_writes(value: object) -> None:
    """Non-ASCII text, control characters, floats (NaN included), nesting: written
    as `json.dumps` writes them, without its spaces."""
    assert dumps_exact(value) == json.dumps(value, separators=(",", ":"))


def test_a_list_of_numbers_is_written_exactly_in_place() -> None:
    numbers = [Decimal("0.1250"), Decimal("-1E-7"), 3, True, None, [Decimal("2.50")]]
    assert dumps_exact(numbers) == "[0.1250,-0.0000001,3,true,null,[2.50]]"


def _not_whole(text: str) -> bool:
    return any(mark in text for mark in ".eE")


@given(
    numbers=st.lists(
        # Numbers with a fraction or an exponent (whole ones are read as ints).
        st.decimals(allow_nan=False, allow_infinity=False).map(str).filter(_not_whole)
        | st.floats(allow_nan=False, allow_infinity=False).map(repr),
        max_size=6,
    )
)
def test_json_numbers_are_written_back_as_they_were_read(numbers: list[str]) -> None:
    text = f"[{','.join(numbers)}]"
    read = json.loads(text, parse_float=JsonText)
    assert dumps_exact(read) == text
    assert (
        dumps_exact({"v": read, "n": read[:1]}) == f'{{"v":{text},"n":[{",".join(numbers[:1])}]}}'
    )
    assert [Decimal(n) for n in read] == [Decimal(n) for n in numbers]


@given(value=st.decimals())
def test_a_decimal_is_written_with_every_digit_and_no_exponent(value: Decimal) -> None:
    assert dumps_exact(value) == format(value, "f")
    assert dumps_exact([value]) == f"[{format(value, 'f')}]"
