"""Fees: ``percent`` (exact Decimal) of the amount + ``fixed``, bounded by ``min``/``max``,
then rounded half-up to the currency's minor unit with ``app.domain.money.round_minor``.

All inputs and outputs are integers of minor units except ``percent``; no float ever enters.
"""
from __future__ import annotations

from decimal import Decimal

from app.domain.money import is_currency, percent_of, round_minor
from rules.model import Fee


def compute_fee(fee: Fee | None, amount: int, currency: str) -> int:
    """The fee in minor units of ``currency`` for ``amount`` minor units (0 without a fee spec)."""
    if type(amount) is not int:
        raise TypeError("amount must be an int of minor units")
    if not is_currency(currency):
        raise ValueError(f"unknown currency {currency!r}")
    if fee is None:
        return 0
    if not isinstance(fee.percent, Decimal):
        raise TypeError("fee percent must be a Decimal")
    raw = percent_of(amount, fee.percent) + Decimal(fee.fixed)
    if fee.min is not None and raw < fee.min:
        raw = Decimal(fee.min)
    if fee.max is not None and raw > fee.max:
        raw = Decimal(fee.max)
    return round_minor(raw)


def fee_to_dict(fee: Fee) -> dict:
    out: dict = {"percent": str(fee.percent), "fixed": fee.fixed}
    if fee.min is not None:
        out["min"] = fee.min
    if fee.max is not None:
        out["max"] = fee.max
    return out


def formula(fee: Fee | None, amount: int, currency: str, money=None) -> str:
    """How the fee came about, in words: ``2.9% of 150000 + 30 = 4380; min 50 → 4380 USD``.

    ``money(value, currency)``, when given, writes each amount (an int of minor units, or the exact
    Decimal before rounding): the console passes ``app.domain.money.format_money``, which makes it
    ``2.9% of 1,500.00 USD + 0.30 USD = 43.80 USD → 43.80 USD``. Without it the amounts are the
    bare minor units and the currency is named once, at the end (the CLI's JSON keeps that text)."""
    if fee is None:
        return "no fee"
    write = (lambda value: money(value, currency)) if money else (lambda value: f"{Decimal(value).normalize():f}")
    raw = percent_of(amount, fee.percent) + Decimal(fee.fixed)
    text = f"{fee.percent}% of {write(amount)} + {write(fee.fixed)} = {write(raw)}"
    if fee.min is not None and raw < fee.min:
        text += f"; below min {write(fee.min)}"
    if fee.max is not None and raw > fee.max:
        text += f"; above max {write(fee.max)}"
    return f"{text} → {write(compute_fee(fee, amount, currency))}" + ("" if money else f" {currency}")
