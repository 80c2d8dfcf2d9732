"""Fees: exact Decimal percent, bounds before rounding, half-up, integers out."""
from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.money import format_money
from rules.fees import compute_fee, formula
from rules.model import Fee

percents = st.decimals(min_value=0, max_value=100, places=3, allow_nan=False, allow_infinity=False)
minor = st.integers(min_value=0, max_value=10**12)


def test_contract_example():
    fee = Fee(Decimal("2.9"), 30, 50)
    assert compute_fee(fee, 100000, "USD") == 2930
    assert compute_fee(fee, 100, "USD") == 50  # min bound
    assert compute_fee(None, 100, "USD") == 0


def test_half_up_at_exactly_half():
    assert compute_fee(Fee(Decimal("0.5")), 100, "USD") == 1  # 0.5 → 1
    assert compute_fee(Fee(Decimal("1.5")), 100, "JPY") == 2  # 1.5 → 2
    assert compute_fee(Fee(Decimal("2.5")), 100, "KWD") == 3  # 2.5 → 3, not banker's 2


def test_bounds_apply_before_rounding():
    # 1.25 % of 1000 = 12.5; max 12.4 is not expressible, max 12 wins before rounding up
    assert compute_fee(Fee(Decimal("1.25"), max=12), 1000, "USD") == 12
    assert compute_fee(Fee(Decimal("1.25"), min=13), 1000, "USD") == 13


def test_no_float_accepted():
    with pytest.raises(TypeError):
        compute_fee(Fee(Decimal("1")), 10.0, "USD")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        compute_fee(Fee(2.9), 1000, "USD")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        compute_fee(Fee(Decimal("1")), 1000, "XXX")


@given(percent=percents, fixed=minor, amount=minor, low=st.none() | minor, high=st.none() | minor)
def test_fee_properties(percent, fixed, amount, low, high):
    if low is not None and high is not None and low > high:
        low, high = high, low
    result = compute_fee(Fee(percent, fixed, low, high), amount, "USD")
    assert type(result) is int
    if low is not None:
        assert result >= low
    if high is not None:
        assert result <= high
    exact = Decimal(amount) * percent / 100 + fixed
    if low is not None:
        exact = max(exact, Decimal(low))
    if high is not None:
        exact = min(exact, Decimal(high))
    assert result == int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    assert abs(Decimal(result) - exact) <= Decimal("0.5")


def test_formula_in_minor_units_or_written_for_people():
    fee = Fee(Decimal("3.0"), 0)
    assert formula(fee, 2052, "USD") == "3.0% of 2052 + 0 = 61.56 → 62 USD"
    assert formula(fee, 2052, "USD", money=format_money) == \
        "3.0% of 20.52 USD + 0.00 USD = 0.6156 USD → 0.62 USD"
    bounded = Fee(Decimal("2.9"), 30, 50)
    assert formula(bounded, 100, "USD", money=format_money) == \
        "2.9% of 1.00 USD + 0.30 USD = 0.329 USD; below min 0.50 USD → 0.50 USD"
    assert formula(Fee(Decimal("1"), 0, None, 40), 50000, "JPY", money=format_money) == \
        "1% of 50,000 JPY + 0 JPY = 500 JPY; above max 40 JPY → 40 JPY"
    assert formula(None, 2052, "USD", money=format_money) == "no fee"
