"""Money is an integer of minor units in an ISO 4217 currency, end to end (see docs/design.md, "Money").

Decimal appears only for percentages; ``round_minor`` is the one rounding function; ``format_money``
is the one way an amount is written for people (the console), in major units.
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


def format_money(amount: int | Decimal | None, currency: str | None, signed: bool = False) -> str:
    """An amount of minor units as people read it, in major units with the currency's code:
    (2052, "USD") → ``20.52 USD``, (500, "JPY") → ``500 JPY``, (-1234, "KWD") → ``-1.234 KWD``,
    thousands grouped (``1,500.00 USD``); ``signed`` writes ``+`` before a positive amount.

    A Decimal is an amount not yet rounded (a fee's 61.56 minor units) and is written exactly
    (``0.6156 USD``): what is charged is ``round_minor`` of it. No amount (None) → ``—``. A currency
    without a known exponent → the bare minor units and the code: its decimals are not guessed.
    For display only: the API speaks integers of minor units.
    """
    if amount is None:
        return "\u2014"
    if isinstance(amount, (bool, float)) or not isinstance(amount, (int, Decimal)):
        raise TypeError("format_money takes an int (or a Decimal) of minor units")
    if not is_currency(currency) or (isinstance(amount, Decimal) and not amount.is_finite()):
        return f"{amount} {currency or ''}".rstrip()
    exponent = CURRENCY_EXPONENTS[currency]
    major = Decimal(amount).scaleb(-exponent)
    places = max(exponent, -major.normalize().as_tuple().exponent)  # a Decimal's extra digits are kept
    return f"{major:{'+' if signed else ''},.{places}f} {currency}"
