"""Write-behind for batch jobs (the callback drain applies up to 100 callbacks per transaction).

Inside ``batched(session)``, rows that only have to exist by commit — journal entries, ledger
lines, queued system-account moves, events — are collected and inserted once per table at the
end, and a customer's balance moves that cannot be refused (credits) are netted per account and
applied once, in account-id order. Moves that can be refused (a customer's debit) still run at once, so a
refusal is raised by the callback that caused it. Everything still happens in the caller's
transaction: a failure while writing behind fails the whole batch, as any statement would.
Outside ``batched`` every write runs at once.
"""
from __future__ import annotations

import contextlib
import json
from collections import defaultdict
from datetime import datetime, timezone
from typing import Callable

from sqlalchemy import JSON, Connection, String, Table, Text, bindparam, cast, func, insert, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

KEY = "payrouter.write_behind"


class WriteBehind:
    def __init__(self) -> None:
        self.inserts: dict[Table, list[dict]] = {}  # in the order tables were first used (FKs)
        self.moves: dict[tuple[str, str], int] = defaultdict(int)  # (account id, balance) → net delta
        self.accounts: dict[str, object] = {}

    def insert(self, table: Table, rows: list[dict]) -> None:
        self.inserts.setdefault(table, []).extend(rows)

    def move(self, account, balance_type: str, delta: int) -> None:
        self.moves[(account.id, balance_type)] += delta
        self.accounts[account.id] = account


def current(session: Session) -> WriteBehind | None:
    return session.info.get(KEY)


_inserts: dict[object, object] = {}


def _insert(table: Table):
    """``INSERT INTO table``, built once per table (the rows come as parameters)."""
    statement = _inserts.get(table)
    if statement is None:
        statement = _inserts[table] = insert(table)
    return statement


def _unnest_insert(table: Table, names: tuple[str, ...]):
    """``INSERT INTO table (names) SELECT unnest(CAST(:a AS type[])), …`` (PostgreSQL): any number
    of rows in one statement of fixed text, one array literal per column, so it is prepared once
    and costs one execution where an executemany costs one per row. The arrays go as text built
    by ``array_literal`` (psycopg's list adapter escapes each element with a regular expression:
    most of this insert's client CPU); JSON goes as text and is cast back. None when a column left
    out has a Python-side default: an INSERT … SELECT would evaluate it once for all the rows."""
    key = (table, names)
    if key in _inserts:
        return _inserts[key]
    if any(column.default is not None for column in table.columns if column.name not in names):
        _inserts[key] = None
        return None
    columns = []
    for name in names:
        column = table.c[name]
        as_text = bindparam(name, type_=Text())
        if isinstance(column.type, JSON):
            columns.append(cast(func.unnest(cast(as_text, ARRAY(Text()))), column.type))
        elif isinstance(column.type, String):  # as text: the column's own length check applies
            columns.append(func.unnest(cast(as_text, ARRAY(Text()))))  # (a cast to varchar(n) would cut)
        else:
            columns.append(func.unnest(cast(as_text, ARRAY(column.type))))
    statement = _inserts[key] = insert(table).from_select(list(names), select(*columns))
    return statement


def array_literal(values: list) -> str:
    """A PostgreSQL array literal of ``values`` (every element quoted; None is NULL)."""
    parts = []
    for value in values:
        if value is None:
            parts.append("NULL")
            continue
        if isinstance(value, datetime):  # naive UTC, as the columns hold it
            if value.tzinfo is not None:
                value = value.astimezone(timezone.utc).replace(tzinfo=None)
            text = value.isoformat(" ")
        else:
            text = str(value)
        parts.append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "{" + ",".join(parts) + "}"


UNNEST_FROM_ROWS = 2  # from two rows one INSERT … SELECT costs less than an executemany (docs/benchmarks.md)


def _execute_inserts(connection: Connection, table: Table, rows: list[dict]) -> None:
    names = tuple(rows[0])
    statement = None
    if (len(rows) >= UNNEST_FROM_ROWS and connection.dialect.name == "postgresql"
            and all(tuple(row) == names for row in rows)):  # every row gives the same columns
        statement = _unnest_insert(table, names)
    if statement is None:
        connection.execute(_insert(table), rows)
        return
    arrays = {}
    for name in names:
        values = [row[name] for row in rows]
        column_type = table.c[name].type
        if isinstance(column_type, JSON):  # None is JSON null, as SQLAlchemy stores it, unless none_as_null
            values = [None if value is None and column_type.none_as_null else json.dumps(value) for value in values]
        arrays[name] = array_literal(values)
    connection.execute(statement, arrays)


def insert_rows(session: Session, table: Table, rows: list[dict]) -> None:
    """Insert ``rows`` now, or at the end of the batch when the session is batching."""
    behind = current(session)
    if behind is not None:
        behind.insert(table, rows)
    elif rows:
        _execute_inserts(session.connection(), table, rows)


@contextlib.contextmanager
def batched(session: Session, apply_moves: Callable[[Session, WriteBehind], None]):
    """Collect writes made in the block; write them when it ends without an exception."""
    if KEY in session.info:  # already batching: the outer block writes
        yield session.info[KEY]
        return
    pending = session.info[KEY] = WriteBehind()
    try:
        yield pending
    finally:
        session.info.pop(KEY, None)
    connection = session.connection()
    for table, rows in pending.inserts.items():
        if rows:
            _execute_inserts(connection, table, rows)
    apply_moves(session, pending)
