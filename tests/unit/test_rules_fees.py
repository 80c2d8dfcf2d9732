"""Fees: exact Decimal percent, bounds before rounding, half-up, integers out."""
from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules.fees import compute_fee
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
