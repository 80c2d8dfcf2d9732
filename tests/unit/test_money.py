from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.money import CURRENCY_EXPONENTS, format_money, percent_of, round_minor


def test_iso_exponents():
    assert (CURRENCY_EXPONENTS["JPY"], CURRENCY_EXPONENTS["USD"], CURRENCY_EXPONENTS["KWD"]) == (0, 2, 3)


@pytest.mark.parametrize("value,expected", [("0.5", 1), ("1.5", 2), ("2.49", 2), ("-0.5", -1), ("2.5", 3)])
def test_round_half_up(value, expected):
    assert round_minor(Decimal(value)) == expected


def test_round_refuses_floats():
    with pytest.raises(TypeError):
        round_minor(0.5)


@given(st.integers(min_value=0, max_value=10**12), st.decimals(min_value=0, max_value=100, places=3))
def test_percent_is_exact(minor, pct):
    value = percent_of(minor, pct)
    assert isinstance(value, Decimal)
    assert value * 100 == Decimal(minor) * pct
    assert abs(round_minor(value) - value) <= Decimal("0.5")


@pytest.mark.parametrize("amount,currency,shown", [
    (2052, "USD", "20.52 USD"), (5, "USD", "0.05 USD"), (0, "USD", "0.00 USD"), (150000, "USD", "1,500.00 USD"),
    (500, "JPY", "500 JPY"), (123456, "JPY", "123,456 JPY"),
    (1234, "KWD", "1.234 KWD"), (5, "KWD", "0.005 KWD"),
    (-2052, "USD", "-20.52 USD"), (-500, "JPY", "-500 JPY"), (-1234, "KWD", "-1.234 KWD"),
    (None, "USD", "\u2014"), (None, None, "\u2014"),
    (Decimal("61.56"), "USD", "0.6156 USD"), (Decimal("62"), "USD", "0.62 USD"), (Decimal("61.56"), "JPY", "61.56 JPY"),
    (2052, "XXX", "2052 XXX"),  # no known exponent: the minor units as they are, no guessed decimals
])
def test_format_money_writes_major_units_with_the_code(amount, currency, shown):
    assert format_money(amount, currency) == shown


def test_format_money_signed_and_rounded_like_the_money_type():
    assert (format_money(2052, "USD", signed=True), format_money(-7, "USD", signed=True)) == ("+20.52 USD", "-0.07 USD")
    raw = percent_of(2052, "3")  # 61.56 minor units: shown exactly, charged as round_minor makes it
    assert (format_money(raw, "USD"), format_money(round_minor(raw), "USD")) == ("0.6156 USD", "0.62 USD")


@pytest.mark.parametrize("amount", [20.52, True, "2052"])
def test_format_money_refuses_what_is_not_minor_units(amount):
    with pytest.raises(TypeError):
        format_money(amount, "USD")
