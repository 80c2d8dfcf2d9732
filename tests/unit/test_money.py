from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.money import CURRENCY_EXPONENTS, percent_of, round_minor


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
