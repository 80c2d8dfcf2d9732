"""A channel's statement staged in the database as it streams in (``reconciliation_lines``), for
set-wise matching (app.services.reconcile), never held whole in memory.

Each pass loads under a load id of its own: PostgreSQL through ``COPY … FROM STDIN`` on the
engine's psycopg connection (one statement for the whole stream, rows sent as they come), SQLite
through executemany inserts of BATCH lines, each batch its own short transaction (a slow channel
never holds SQLite's write lock). The pass deletes its rows when it ends, whatever the outcome;
a load id starts with its second since the epoch, so the rows of a process that died mid-pass are
deleted by a later pass once they are older than STALE.
"""
from __future__ import annotations

import datetime as dt
import secrets
import time
from typing import Callable, Iterable

from sqlalchemy import delete, insert

from app.adapters.db import get_engine, unit_of_work
from app.adapters.models import reconciliation_lines as LINES
from app.domain.money import MAX_AMOUNT

BATCH = 5000
STALE = 86400  # seconds: a load this old belongs to no running pass
_COLUMNS = ("load_id", "channel_reference", "operation", "amount", "currency", "status", "fee", "settled_at")
_COPY = f"COPY {LINES.name} ({', '.join(_COLUMNS)}) FROM STDIN"
_UTC = dt.timezone.utc


def new_load_id() -> str:
    return f"ld_{int(time.time()):010d}_{secrets.token_hex(8)}"


def _naive_utc(moment: dt.datetime) -> dt.datetime:
    """Columns hold naive UTC (as every DateTime of ours); PostgreSQL would drop an offset silently."""
    return moment.astimezone(_UTC).replace(tzinfo=None) if moment.tzinfo else moment


# The text columns' widths, from the table: a line is checked against them before it is written.
_WIDTHS = {name: LINES.c[name].type.length for name in ("channel_reference", "operation", "currency", "status")}


def _row(load_id: str, number: int, line) -> tuple:
    """One line as a staging row, or ValueError naming the line and what is wrong with it: a
    text value that is not a string, empty, wider than its column or holding a NUL; an amount
    outside 0..MAX_AMOUNT or a fee outside ±MAX_AMOUNT (beyond them the fee arithmetic in SQL could
    leave 64 bits); a settlement time that is not a datetime. Nothing unchecked reaches COPY."""
    values = {name: getattr(line, name) for name in _WIDTHS}
    for name, value in values.items():
        if not isinstance(value, str) or not value or len(value) > _WIDTHS[name] or "\x00" in value:
            raise ValueError(f"statement line {number}: {name} {str(value)[:40]!r} is not a string of 1 to "
                             f"{_WIDTHS[name]} characters")
    amount, fee, settled = line.amount, line.fee, line.settled_at
    if type(amount) is not int or not 0 <= amount <= MAX_AMOUNT:
        raise ValueError(f"statement line {number}: amount {str(amount)[:40]} is not an integer in 0..{MAX_AMOUNT}")
    if type(fee) is not int or not -MAX_AMOUNT <= fee <= MAX_AMOUNT:
        raise ValueError(f"statement line {number}: fee {str(fee)[:40]} is not an integer in ±{MAX_AMOUNT}")
    if not isinstance(settled, dt.datetime):
        raise ValueError(f"statement line {number}: settled_at {str(settled)[:40]!r} is not a time")
    # A currency code is one currency in any case (some channels write ``usd``), as ours are stored.
    return (load_id, values["channel_reference"], values["operation"], amount, values["currency"].upper(),
            values["status"], fee, _naive_utc(settled))


def load(load_id: str, lines: Iterable, keep: Callable[[dt.datetime], bool] | None = None) -> int:
    """Write ``lines`` (channels.base.StatementLine, or anything with its attributes) under
    ``load_id`` as they come, each checked first (``_row``: ValueError on a bad one); ``keep``: a
    filter on a line's settlement time (naive UTC). Returns how many were written. An exception
    from ``lines`` (a stream that broke off) propagates: on PostgreSQL nothing of this call is
    kept, on SQLite the caller's ``discard`` removes the batches."""
    rows = (row for number, line in enumerate(lines, 1) for row in (_row(load_id, number, line),)
            if keep is None or keep(row[-1]))
    engine = get_engine()
    if engine.dialect.name == "postgresql":
        return _copy(engine, rows)
    return _insert_batches(rows)


def _copy(engine, rows) -> int:
    written = 0
    connection = engine.raw_connection()  # the pool's psycopg connection: psycopg's COPY, not SQLAlchemy's
    try:
        with connection.driver_connection.cursor() as cursor, cursor.copy(_COPY) as copy:
            for row in rows:
                copy.write_row(row)
                written += 1
        connection.commit()
        # Fresh rows have no statistics yet: without them the planner guesses a handful of lines
        # and joins them to attempts one index probe at a time.
        with connection.driver_connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {LINES.name}")
        connection.commit()
    except BaseException as exc:
        connection.rollback()
        if str(getattr(exc, "sqlstate", "") or "").startswith("22"):  # a data exception: a value COPY refused
            raise ValueError(f"a statement line the database refused: {exc}") from exc
        raise
    finally:
        connection.close()
    return written


def _insert_batches(rows) -> int:
    written, batch = 0, []
    statement = insert(LINES)
    for row in rows:
        batch.append(dict(zip(_COLUMNS, row, strict=True)))
        if len(batch) >= BATCH:
            with unit_of_work() as session:
                session.execute(statement, batch)
            written, batch = written + len(batch), []
    if batch:
        with unit_of_work() as session:
            session.execute(statement, batch)
        written += len(batch)
    return written


def discard(load_id: str) -> None:
    """Delete this load's rows, and those of loads older than STALE (a process that died mid-pass)."""
    stale = f"ld_{int(time.time()) - STALE:010d}"
    with unit_of_work() as session:
        session.execute(delete(LINES).where(LINES.c.load_id == load_id))
        session.execute(delete(LINES).where(LINES.c.load_id < stale))
