"""Write-behind for batch jobs (the callback drain applies 25 callbacks per transaction).

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
from collections import defaultdict
from typing import Callable

from sqlalchemy import Table, insert
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


_inserts: dict[Table, object] = {}


def _insert(table: Table):
    """``INSERT INTO table``, built once per table (the rows come as parameters)."""
    statement = _inserts.get(table)
    if statement is None:
        statement = _inserts[table] = insert(table)
    return statement


def insert_rows(session: Session, table: Table, rows: list[dict]) -> None:
    """Insert ``rows`` now, or at the end of the batch when the session is batching."""
    behind = current(session)
    if behind is not None:
        behind.insert(table, rows)
    else:
        session.connection().execute(_insert(table), rows)


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
        connection.execute(_insert(table), rows)
    apply_moves(session, pending)
