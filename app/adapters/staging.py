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


def load(load_id: str, lines: Iterable, keep: Callable[[dt.datetime], bool] | None = None) -> int:
    """Write ``lines`` (channels.base.StatementLine, or anything with its attributes) under
    ``load_id`` as they come; ``keep``: a filter on a line's settlement time (naive UTC). Returns
    how many were written. An exception from ``lines`` (a stream that broke off) propagates: on
    PostgreSQL nothing of this call is kept, on SQLite the caller's ``discard`` removes the batches."""
    rows = ((load_id, line.channel_reference, line.operation, line.amount, line.currency, line.status, line.fee,
             settled) for line in lines for settled in (_naive_utc(line.settled_at),) if keep is None or keep(settled))
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
    except BaseException:
        connection.rollback()
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
