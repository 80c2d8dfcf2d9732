from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.money import CurrencyMismatch, Money, exponent, percent_of, round_minor


def test_iso_exponents():
    assert (exponent("JPY"), exponent("USD"), exponent("KWD")) == (0, 2, 3)


@pytest.mark.parametrize("value,expected", [("0.5", 1), ("1.5", 2), ("2.49", 2), ("-0.5", -1), ("2.5", 3)])
def test_round_half_up(value, expected):
    assert round_minor(Decimal(value)) == expected


def test_round_refuses_floats():
    with pytest.raises(TypeError):
        round_minor(0.5)


def test_money_refuses_floats_and_mixed_currencies():
    with pytest.raises(TypeError):
        Money(1.0, "USD")
    with pytest.raises(CurrencyMismatch):
        Money(1, "USD") + Money(1, "EUR")
    with pytest.raises(ValueError):
        Money(1, "XXX")


def test_money_arithmetic_and_display():
    assert Money(150, "USD") + Money(25, "USD") == Money(175, "USD")
    assert str(Money(12345, "USD")) == "123.45 USD"
    assert str(Money(500, "JPY")) == "500 JPY"
    assert str(Money(-1005, "KWD")) == "-1.005 KWD"


@given(st.integers(min_value=0, max_value=10**12), st.decimals(min_value=0, max_value=100, places=3))
def test_percent_is_exact(minor, pct):
    value = percent_of(minor, pct)
    assert isinstance(value, Decimal)
    assert value * 100 == Decimal(minor) * pct
    assert abs(round_minor(value) - value) <= Decimal("0.5")
