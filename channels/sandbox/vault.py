"""The sandbox's card vault (contract §4): ``POST /tokens`` turns card details into a ``tok_…``
that a charge may carry in ``payment_method.token`` instead of the card. A charge whose token
this vault did not issue (another vault's, a made-up one, or one bound to another channel) is
refused ``invalid_token``. Card numbers stay in the vault's memory: only brand, last4 and
country come back, as from a real PSP's vault."""
from __future__ import annotations

import datetime as dt
import secrets
import threading
from dataclasses import dataclass

# Leading digits → brand (the networks' published ranges, enough for test cards).
_BRANDS = (("34", "amex"), ("37", "amex"), ("4", "visa"), ("51", "mastercard"), ("52", "mastercard"),
           ("53", "mastercard"), ("54", "mastercard"), ("55", "mastercard"), ("2", "mastercard"),
           ("6011", "discover"), ("65", "discover"), ("35", "jcb"), ("62", "unionpay"))


class CardRefused(ValueError):
    """Card details the vault will not tokenize; ``param`` names the field."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Card:
    brand: str
    last4: str
    country: str
    channel: str | None  # bound to one channel, or usable on every channel of this sandbox


def _luhn_ok(number: str) -> bool:
    total = 0
    for i, digit in enumerate(reversed(number)):
        d = int(digit) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _brand(number: str) -> str:
    return next((brand for prefix, brand in _BRANDS if number.startswith(prefix)), "unknown")


class Vault:
    """Tokens issued by this sandbox process, thread-safe."""

    def __init__(self, today=lambda: dt.datetime.now(dt.timezone.utc).date()):
        self._cards: dict[str, Card] = {}
        self._lock = threading.Lock()
        self._today = today

    def issue(self, data: dict, channels: set[str]) -> dict:
        """``{number, exp_month, exp_year, cvc, country?, channel?}`` → ``{token, brand, last4, country}``."""
        number = data.get("number")
        if not isinstance(number, str) or not number.isdigit() or not 12 <= len(number) <= 19 \
                or not _luhn_ok(number):
            raise CardRefused("number", "number must be 12-19 digits passing the Luhn check")
        month, year = data.get("exp_month"), data.get("exp_year")
        if type(month) is not int or not 1 <= month <= 12:
            raise CardRefused("exp_month", "exp_month must be an integer from 1 to 12")
        today = self._today()
        if type(year) is not int or not today.year <= year <= today.year + 50 \
                or (year, month) < (today.year, today.month):
            raise CardRefused("exp_year", "the card has expired or exp_year is not a 4-digit year")
        cvc = data.get("cvc")
        if not isinstance(cvc, str) or not cvc.isdigit() or len(cvc) not in (3, 4):
            raise CardRefused("cvc", "cvc must be 3 or 4 digits")
        country = data.get("country", "US")
        if not isinstance(country, str) or len(country) != 2 or not country.isalpha() or not country.isupper():
            raise CardRefused("country", "country must be an ISO 3166 alpha-2 code")
        channel = data.get("channel")
        if channel is not None and channel not in channels:
            raise CardRefused("channel", "no such sandbox channel")
        card = Card(_brand(number), number[-4:], country, channel)
        token = "tok_" + secrets.token_hex(16)
        with self._lock:
            self._cards[token] = card
        return {"token": token, "object": "token", "brand": card.brand, "last4": card.last4,
                "country": card.country, "channel": card.channel}

    def card(self, token: object, channel: str) -> Card | None:
        """The card behind ``token`` if this vault issued it for ``channel`` (or for any channel)."""
        with self._lock:
            card = self._cards.get(token) if isinstance(token, str) else None
        return card if card is not None and card.channel in (None, channel) else None
