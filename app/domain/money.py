"""Money is an integer of minor units in an ISO 4217 currency, end to end (see docs/design.md, "Money").

Decimal appears only for percentages; ``round_minor`` is the one rounding function.
"""
from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

# ISO 4217 minor-unit exponents for the currencies we accept.
CURRENCY_EXPONENTS: dict[str, int] = {
    "AED": 2, "ARS": 2, "AUD": 2, "BDT": 2, "BGN": 2, "BHD": 3, "BRL": 2, "CAD": 2, "CHF": 2,
    "CLP": 0, "CNY": 2, "COP": 2, "CZK": 2, "DKK": 2, "EGP": 2, "EUR": 2, "GBP": 2, "HKD": 2,
    "HUF": 2, "IDR": 2, "ILS": 2, "INR": 2, "ISK": 0, "JOD": 3, "JPY": 0, "KES": 2, "KRW": 0,
    "KWD": 3, "MAD": 2, "MXN": 2, "MYR": 2, "NGN": 2, "NOK": 2, "NZD": 2, "OMR": 3, "PHP": 2,
    "PKR": 2, "PLN": 2, "QAR": 2, "RON": 2, "SAR": 2, "SEK": 2, "SGD": 2, "THB": 2, "TND": 3,
    "TRY": 2, "TWD": 2, "UAH": 2, "USD": 2, "VND": 0, "ZAR": 2,
}

# Largest amount we accept in minor units: fits a signed 64-bit column with room for sums.
MAX_AMOUNT = 10**15


def is_currency(code: object) -> bool:
    return isinstance(code, str) and code in CURRENCY_EXPONENTS


def round_minor(value: Decimal) -> int:
    """The one rounding function: a Decimal amount of minor units, half-up, to an int."""
    if not isinstance(value, Decimal):
        raise TypeError("round_minor takes a Decimal")
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def percent_of(minor: int, percent: Decimal | str) -> Decimal:
    """``percent`` % of ``minor`` minor units, exact (not yet rounded)."""
    if isinstance(percent, float) or isinstance(minor, float):
        raise TypeError("no floats where money flows")
    return Decimal(minor) * Decimal(percent) / Decimal(100)
