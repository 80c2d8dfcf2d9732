"""The settlement report: a day's balance transactions summed per merchant, mode, currency and
channel (``payrouter report settlement``, ``GET /v1/reports/settlement``).

Read from the ledger as the balance transactions are (app.services.balance): a day is the UTC
day of the journal entries; an entry's channel is the channel whose clearing account it moves
(``channel_clearing:<id>``), and ``balance`` for one that moved no channel's money (a payment
from a customer's balance, or its refund). Per group:

- ``count``: balance transactions;
- ``gross``: the ``amount`` of every transaction that is not a refund or a dispute (payments;
  top-ups and withdrawals add 0, only their fee is the merchant's);
- ``fees``: what the merchant was charged; ``refunds``, ``disputes``: what left the balance for
  each (positive figures; a dispute kind is one whose entry kind starts with ``dispute``);
- ``net``: the sum of the settlement lines, always ``gross − fees − refunds − disputes``.
"""
from __future__ import annotations

import csv
import io
from dataclasses import astuple, dataclass, fields
from datetime import date, datetime, time, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.adapters.models import Account, LedgerLine
from app.domain.errors import InvalidRequest
from app.services import balance, ledger

IN_LEDGER = "balance"  # the channel column of an entry that moved no channel's money
COLUMNS = ("currency", "channel", "count", "gross", "fees", "refunds", "disputes", "net")


@dataclass
class SettlementRow:
    merchant_id: str
    livemode: bool
    currency: str
    channel: str
    count: int = 0
    gross: int = 0
    fees: int = 0
    refunds: int = 0
    disputes: int = 0
    net: int = 0

    def add(self, txn: balance.BalanceTransaction) -> None:
        self.count += 1
        self.fees += txn.fee
        self.net += txn.net
        if txn.type == "refund":
            self.refunds -= txn.amount
        elif txn.type.startswith("dispute"):
            self.disputes -= txn.amount
        else:
            self.gross += txn.amount


def parse_day(raw: str | None, param: str = "date") -> date:
    """A report's day: YYYY-MM-DD (a UTC day), else 400 naming ``param``. The report reads up to the
    next midnight, so the last day of the calendar (9999-12-31, whose end Python cannot represent)
    is refused as well, instead of overflowing in the query."""
    try:
        if raw is None or len(raw) != 10:
            raise ValueError
        day = date.fromisoformat(raw)
        if day == date.max:
            raise ValueError
        return day
    except ValueError:
        raise InvalidRequest(f"{param} must be a day as YYYY-MM-DD", param=param,
                             code="parameter_missing" if raw is None else "parameter_invalid") from None


def settlement(session: Session, day: date, merchant_id: str | None = None,
               livemode: bool | None = None) -> list[SettlementRow]:
    """The day's rows, ordered by merchant, mode, currency and channel (three statements)."""
    accounts = balance.merchant_accounts(session, merchant_id, livemode)
    if not accounts:
        return []
    start = datetime.combine(day, time())
    end = start + timedelta(days=1)
    lines = LedgerLine.__table__
    day_entries = (select(lines.c.entry_id)
                   .where(lines.c.account_id.in_([a.id for a in accounts]),
                          lines.c.created_at >= start, lines.c.created_at < end))
    entry_ids = sorted(set(session.scalars(day_entries)))
    channels = _channels(session, day_entries, start, end)
    rows: dict[tuple, SettlementRow] = {}
    for txn in balance.transactions(session, entry_ids, accounts).values():
        key = (txn.merchant_id, txn.livemode, txn.currency, channels.get(txn.entry_id, IN_LEDGER))
        rows.setdefault(key, SettlementRow(*key)).add(txn)
    return [rows[key] for key in sorted(rows)]


def _channels(session: Session, day_entries, start: datetime, end: datetime) -> dict[str, str]:
    """Each of the day's entries that moved a channel's clearing account: that channel."""
    lines, accounts = LedgerLine.__table__, Account.__table__
    prefix = ledger.CHANNEL_CLEARING + ":"
    query = (select(lines.c.entry_id, accounts.c.system_code)
             .join(accounts, accounts.c.id == lines.c.account_id)
             .where(lines.c.entry_id.in_(day_entries.scalar_subquery()), lines.c.created_at >= start,
                    lines.c.created_at < end, accounts.c.kind == "system",
                    accounts.c.system_code.startswith(prefix, autoescape=True)))
    return {row.entry_id: row.system_code.removeprefix(prefix) for row in session.execute(query)}


def to_csv(rows: list[SettlementRow], *, with_merchant: bool) -> str:
    """The rows as CSV with a header; ``with_merchant``: lead with the merchant and its mode (the
    operator's report of every merchant), else the merchant API's columns."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    head = ("merchant", "mode") if with_merchant else ()
    writer.writerow(head + COLUMNS)
    for row in rows:
        lead = (row.merchant_id, "live" if row.livemode else "test") if with_merchant else ()
        writer.writerow(lead + astuple(row)[2:])
    return out.getvalue()


def to_table(rows: list[SettlementRow]) -> str:
    """The rows as an aligned text table, numbers right-aligned."""
    head = ["merchant", "mode", *COLUMNS]
    body = [[row.merchant_id, "live" if row.livemode else "test", *map(str, astuple(row)[2:])] for row in rows]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    numeric = {i for i, f in enumerate(fields(SettlementRow)) if f.type == "int"}
    return "\n".join("  ".join(cell.rjust(w) if i in numeric else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(line, widths, strict=True))).rstrip()
                     for line in [head, *body])
