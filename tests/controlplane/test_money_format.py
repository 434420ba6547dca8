"""Money as people read it: one formatter, precision chosen by the amount's magnitude."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.template import Context, Template, TemplateSyntaxError
from hypothesis import given
from hypothesis import strategies as st

from controlplane.money import usd, usd_per


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        (None, "—"),
        (Decimal("0"), "$0.00"),
        (Decimal("0E-18"), "$0.00"),
        (0, "$0.00"),
        (Decimal("5"), "$5.00"),
        (Decimal("1234567.891"), "$1,234,567.89"),
        (Decimal("1.005"), "$1.01"),  # half up, as people round money
        (Decimal("0.25"), "$0.25"),
        (Decimal("0.2500"), "$0.25"),
        (Decimal("0.1"), "$0.10"),
        (Decimal("0.012345"), "$0.0123"),
        (Decimal("0.193750"), "$0.1938"),
        (Decimal("0.999999"), "$1.00"),  # rounds into the next magnitude
        (Decimal("0.0099999"), "$0.01"),
        (Decimal("0.00999"), "$0.00999"),
        (Decimal("0.004793"), "$0.00479"),
        (Decimal("0.000000800000000000"), "$0.0000008"),
        (Decimal("0.000000075"), "$0.000000075"),
        (Decimal("0.000000000000000001"), "$0.000000000000000001"),
        (Decimal("-1.5"), "-$1.50"),
        (Decimal("-0.0000008"), "-$0.0000008"),
        (2.5, "$2.50"),
        (Decimal("NaN"), "—"),
        (Decimal("Infinity"), "—"),
    ],
)
def test_the_precision_follows_the_magnitude(amount, shown):
    assert usd(amount) == shown


def test_a_per_token_price_reads_per_million_tokens():
    assert usd_per(Decimal("0.0000008"), 1_000_000) == "$0.80"
    assert usd_per(Decimal("0.000000075"), 1_000_000) == "$0.075"
    assert usd_per(None, 1_000_000) == "—"


AMOUNTS = st.decimals(allow_nan=True, allow_infinity=True) | st.decimals(
    min_value=Decimal("-1e12"), max_value=Decimal("1e12"), places=18
)


def significant_digits(shown: str) -> int:
    digits = re.sub(r"[^0-9]", "", shown).lstrip("0").rstrip("0")
    return len(digits)


@given(AMOUNTS)
def test_formatting_never_raises_and_always_reads_as_dollars(amount):
    shown = usd(amount)

    assert shown == "—" or re.fullmatch(r"-?\$\d{1,3}(,\d{3})*\.\d{2,}", shown), shown


@given(st.decimals(min_value=Decimal("-0.999"), max_value=Decimal("0.999"), places=18))
def test_below_a_dollar_no_more_than_four_significant_digits_are_shown(amount):
    assert significant_digits(usd(amount)) <= 4


@given(st.decimals(min_value=Decimal("1e-18"), max_value=Decimal("1e12"), places=18))
def test_the_shown_amount_is_within_rounding_of_the_exact_one(amount):
    shown = Decimal(usd(amount).replace("$", "").replace(",", ""))

    if amount >= Decimal("0.995"):
        assert abs(shown - amount) <= Decimal("0.005")  # to the cent
    elif amount >= Decimal("0.0099995"):
        assert abs(shown - amount) <= Decimal("0.00005")  # to 4 places
    else:
        assert abs(shown - amount) <= amount * Decimal("0.005")  # 3 significant digits
    assert shown > 0  # a cost is never shown as nothing when it is something


@given(st.decimals(min_value=Decimal("0"), max_value=Decimal("1e9"), places=18))
def test_a_negative_amount_reads_as_its_size_with_a_minus(amount):
    assert usd(-amount) in {usd(amount), f"-{usd(amount)}"}


def test_the_template_filter_is_the_same_formatter_with_no_places():
    template = Template(
        "{% load money %}{{ price|usd }} | {{ cost|usd }} | {{ none|usd }} | {{ word|usd }}"
        ' | <span title="{{ price|usd_exact }}">'
    )

    rendered = template.render(
        Context({"price": Decimal("0.000000800000000000"), "cost": 12.5, "none": None, "word": "x"})
    )

    assert rendered == '$0.0000008 | $12.50 | — | — | <span title="$0.0000008">'


def test_a_places_argument_is_refused_so_every_page_reads_alike():
    with pytest.raises(TemplateSyntaxError):
        Template("{% load money %}{{ amount|usd:4 }}")


def test_no_template_passes_places_to_the_money_filter():
    templates = Path(settings.BASE_DIR, "templates")
    offenders = [
        str(path.relative_to(templates))
        for path in templates.rglob("*.html")
        if re.search(r"\|\s*usd\s*:", path.read_text())
    ]

    assert offenders == []
