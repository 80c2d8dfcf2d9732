"""Double-entry ledger.

A journal entry is a set of lines whose amounts sum to zero per currency; it is written
in the same transaction as the business change it records. Account balances are kept
on the account row and moved by one conditional UPDATE per line
(``SET available = available + :delta WHERE id = :id AND available + :delta >= 0``):
the database applies it atomically under its row lock, so concurrent postings can
neither lose an update nor overdraw a customer account. Accounts are updated in id
order so two postings touching the same pair cannot deadlock. PostgreSQL also refuses
an unbalanced entry at commit (a deferred constraint trigger, migration 0001). On PostgreSQL,
outside a batch, the entry, its lines, its queued moves (below) and its first customer account's
move are one statement (``_post_in_one_statement``); SQLite writes them one statement each.

Hot accounts: a merchant's system accounts (settlement, fee revenue, channel clearing) are
touched by every one of its payments, so updating their rows in each posting would make all
of them wait for each other's row locks until commit. Their moves are never refused, so a
posting queues them instead (``account_moves``, inserted with the lines, in the same
transaction) and ``apply_queued_moves`` adds them to the rows in batches, netted per account.
The lines stay the record and balance at every commit; a system account's row lags its
lines by the moves still queued (about a second while core workers run), and
``system_balances`` gives the exact figure.

In a batch job (app.adapters.writebehind) the lines and queued moves are inserted at the end of the
batch, and a customer's moves that cannot be refused (credits) are netted per account.
"""
from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, event, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from app import context
from app.adapters import writebehind
from app.adapters.db import just_before_commit
from app.adapters.models import Account, AccountMove, JournalEntry, LedgerLine, new_id, utcnow
from app.domain.errors import InsufficientFunds, PayRouterError
from app.domain.postings import AVAILABLE, PENDING, Entry, Role

# System accounts, one per merchant and currency, created on first use.
CHANNEL_CLEARING = "channel_clearing"  # + ":<channel id>"
MERCHANT_SETTLEMENT = "merchant_settlement"
FEE_REVENUE = "fee_revenue"
TEST_FUNDING = "test_funding"


class UnbalancedEntry(PayRouterError):
    """A journal entry whose lines do not sum to zero per currency (a programming error)."""

    code = "ledger_unbalanced"


@dataclass(frozen=True)
class Leg:
    account: Account | SystemAccount
    amount: int  # signed minor units; + raises this account's balance
    balance_type: str = AVAILABLE


@dataclass(frozen=True)
class SystemAccount:
    """A merchant's system account as a posting needs it: which row, of what currency. Its
    balances are moved by queued moves (never read or updated by a posting), so this small
    immutable value stands in for the row and can be shared by every thread of the process."""

    id: str
    merchant_id: str
    system_code: str
    currency: str
    kind: str = "system"


# (database, merchant, code, currency) → a system account seen committed: ids never change.
_system_accounts: dict[tuple[str, str, str, str], SystemAccount] = {}
_PENDING_IDS = "payrouter.system_ids"  # session.info: accounts seen in a transaction not yet committed


def reset_cache() -> None:
    """Forget the system accounts seen: for tests that empty the database under a running process."""
    _system_accounts.clear()


@event.listens_for(Session, "after_commit")
def _remember_system_ids(session: Session) -> None:
    """Only accounts of committed rows are cached for the process: an account created (or first
    seen) in a transaction that then rolls back must not be used by later transactions. SQLAlchemy
    also calls this when a savepoint is released; only the real commit counts."""
    if session.in_nested_transaction():
        return
    _system_accounts.update(session.info.pop(_PENDING_IDS, {}))


@event.listens_for(Session, "after_soft_rollback")
def _forget_system_ids(session: Session, previous_transaction) -> None:
    """Any rollback, a savepoint's included, may have taken a new account with it: forget them all
    (a later posting finds the committed ones again with one query)."""
    session.info.pop(_PENDING_IDS, None)


def system_account(session: Session, merchant_id: str, code: str, currency: str,
                   livemode: bool = False) -> SystemAccount:
    """The merchant's system account ``code`` in ``currency`` of one mode (test money and live
    money never share an account), created on first use; a known one costs no query."""
    code = system_code(code, livemode)
    cache_key = (str(session.get_bind().engine.url), merchant_id, code, currency)
    known = _system_accounts.get(cache_key) or session.info.get(_PENDING_IDS, {}).get(cache_key)
    if known:
        return known
    query = select(Account).where(
        Account.merchant_id == merchant_id, Account.system_code == code, Account.currency == currency
    )
    account = session.scalars(query).first()
    if account is None:
        try:
            with session.begin_nested():
                account = Account(
                    id=new_id("acct"), merchant_id=merchant_id, livemode=livemode, kind="system", system_code=code,
                    currency=currency, metadata_={}, available=0, pending=0, version=0,
                    request_id=context.current_request_id(),
                )
                session.add(account)
        except IntegrityError:  # created concurrently by another transaction
            account = session.scalars(query).one()
    found = SystemAccount(account.id, merchant_id, code, currency)
    session.info.setdefault(_PENDING_IDS, {})[cache_key] = found
    return found


def system_code(code: str, livemode: bool) -> str:
    """A system account's stored code: ``live:`` before a live one's, as (merchant, code,
    currency) is the accounts' unique key. A channel's clearing account needs none: a channel is
    of one mode, and its id may take the column's whole length."""
    if not livemode or code.startswith(CHANNEL_CLEARING + ":"):
        return code
    return f"live:{code}"


def legs_of(entry: Entry, account: Callable[[Role], Account | SystemAccount]) -> list[Leg]:
    """A posting rule's entry (``app.domain.postings``) on accounts: ``account`` gives each role's."""
    return [Leg(account(line.role), line.amount, line.balance) for line in entry.lines]


def post(session: Session, *, merchant_id: str, kind: str, source_id: str | None, legs: list[Leg],
         description: str | None = None, at_commit: bool = False) -> str:
    """Write one balanced journal entry and move the balances it touches; the entry's id.

    ``at_commit``: the caller reads no balance after this posting and commits next, so on PostgreSQL
    its customer accounts' rows may be moved just before the COMMIT (``_send_at_commit``) instead of
    now: a hot account's row lock is then held from the move to the commit only, not across the rest
    of the request's round trips and Python. A move refused there fails the COMMIT (the accounts'
    ``ck_accounts_no_overdraft``); ``refused_at_commit`` tells such an error, and the work is run
    again with its moves made as they go (``moves_as_they_go``), which answers the 402 it always did."""
    legs = [leg for leg in legs if leg.amount]  # a zero line records nothing
    totals: dict[str, int] = defaultdict(int)
    for leg in legs:
        if type(leg.amount) is not int:
            raise UnbalancedEntry("ledger amounts are integers in minor units")
        if leg.account.currency != leg.account.currency.upper():
            raise UnbalancedEntry("bad currency")
        totals[leg.account.currency] += leg.amount
    if not legs or any(totals.values()):
        raise UnbalancedEntry(f"entry {kind} does not balance: {dict(totals)}")

    request_id, now, entry_id = context.current_request_id(), utcnow(), new_id("je")
    behind = writebehind.current(session)
    if behind is None and session.get_bind().dialect.name == "postgresql" and _each_move_once(legs):
        _post_in_one_statement(session, entry_id, merchant_id, kind, source_id, description, legs, request_id, now,
                               at_commit=at_commit and not _AS_THEY_GO.get())
        return entry_id
    entry_rows = [{"id": entry_id, "merchant_id": merchant_id, "kind": kind, "source_id": source_id,
                   "description": description, "request_id": request_id, "created_at": now}]
    line_rows = [
        {"id": new_id("ln"), "entry_id": entry_id, "account_id": leg.account.id, "balance_type": leg.balance_type,
         "amount": leg.amount, "currency": leg.account.currency, "request_id": request_id, "created_at": now}
        for leg in legs]
    # Core inserts (this runs for every money movement); in a batch job, at the end of the batch
    # together with the moves that cannot be refused.
    writebehind.insert_rows(session, JournalEntry.__table__, entry_rows)
    writebehind.insert_rows(session, LedgerLine.__table__, line_rows)
    # A refused move below raises, and the caller's transaction rolls all of it back.
    for leg in sorted(legs, key=lambda item: (item.account.id, item.balance_type)):
        if leg.account.kind == "system":
            continue
        if behind is not None and not _guarded(leg):
            behind.move(leg.account, leg.balance_type, leg.amount)
        else:
            _move(session, leg)
    if queued := _queued_moves(legs):
        writebehind.insert_rows(session, AccountMove.__table__, [
            {"account_id": account_id, "balance_type": balance_type, "delta": delta, "created_at": now}
            for (account_id, balance_type), delta in queued.items()])
    return entry_id


def _queued_moves(legs: list[Leg]) -> dict[tuple[str, str], int]:
    """The system accounts' moves of an entry, netted per (account, balance) in that order, none of
    zero: queued (``account_moves``), applied later by ``apply_queued_moves``."""
    queued: dict[tuple[str, str], int] = defaultdict(int)
    for leg in sorted(legs, key=lambda item: (item.account.id, item.balance_type)):
        if leg.account.kind == "system":
            queued[(leg.account.id, leg.balance_type)] += leg.amount
    return {key: delta for key, delta in queued.items() if delta}


def apply_queued_moves(batch: int = 5000) -> int:
    """Apply queued system-account moves to their rows, netted per account, in account-id order,
    and delete them, in one transaction (core workers run this every second). On PostgreSQL the
    rows are taken with SKIP LOCKED, so several workers never apply one twice. Returns how many."""
    from app.adapters.db import unit_of_work

    moves = AccountMove.__table__
    with unit_of_work() as session:
        connection = session.connection()
        rows = connection.execute(select(moves.c.id, moves.c.account_id, moves.c.balance_type, moves.c.delta)
                                  .order_by(moves.c.id).limit(batch).with_for_update(skip_locked=True)).all()
        if not rows:
            return 0
        net: dict[tuple[str, str], int] = defaultdict(int)
        for _id, account_id, balance_type, delta in rows:
            net[(account_id, balance_type)] += delta
        for (account_id, balance_type), delta in sorted(net.items()):
            if delta:
                connection.execute(_MOVES[(balance_type, False)], {"account_id": account_id, "delta": delta})
        connection.execute(_DELETE_MOVES, {"ids": [row.id for row in rows]})
    return len(rows)


def apply_all_queued_moves(batch: int = 5000) -> int:
    """Apply queued moves batch after batch until fewer than a full batch was left (core workers
    run this every second, so a backlog after an outage is worked off at once)."""
    total = 0
    while (applied := apply_queued_moves(batch)) > 0:
        total += applied
        if applied < batch:
            break
    return total


def system_balances(session: Session, account_ids: list[str]) -> dict[tuple[str, str], int]:
    """Exact balances of system accounts now: the row's plus the moves still queued for it."""
    accounts, moves = Account.__table__, AccountMove.__table__
    out = {}
    for row in session.connection().execute(select(accounts.c.id, accounts.c.available, accounts.c.pending)
                                            .where(accounts.c.id.in_(account_ids))):
        out[(row.id, AVAILABLE)], out[(row.id, PENDING)] = row.available, row.pending
    for account_id, balance_type, delta in session.connection().execute(
            select(moves.c.account_id, moves.c.balance_type, func.sum(moves.c.delta))
            .where(moves.c.account_id.in_(account_ids)).group_by(moves.c.account_id, moves.c.balance_type)):
        out[(account_id, balance_type)] = out.get((account_id, balance_type), 0) + int(delta)
    return out


def apply_moves(session: Session, behind: writebehind.WriteBehind) -> None:
    """The netted moves of a write-behind batch, one UPDATE per account, in account-id order (only
    moves that cannot be refused are netted, so no net move is one that can)."""
    for (account_id, balance_type), delta in sorted(behind.moves.items()):
        if delta:
            _move(session, Leg(behind.accounts[account_id], delta, balance_type))


_ACCOUNTS = Account.__table__
_DELETE_MOVES = delete(AccountMove.__table__).where(AccountMove.__table__.c.id.in_(bindparam("ids", expanding=True)))
_MOVES = {
    (balance, guarded): (
        update(_ACCOUNTS)
        .where(_ACCOUNTS.c.id == bindparam("account_id"),
               *([_ACCOUNTS.c[balance] + bindparam("delta") >= 0] if guarded else []))
        .values({balance: _ACCOUNTS.c[balance] + bindparam("delta"), "version": _ACCOUNTS.c.version + 1})
        .returning(_ACCOUNTS.c.available, _ACCOUNTS.c.pending, _ACCOUNTS.c.version)
    )
    for balance in (AVAILABLE, PENDING) for guarded in (False, True)
}


def _guarded(leg: Leg) -> bool:
    """Only a customer's money is refused when short; system accounts may go below zero."""
    return leg.amount < 0 and leg.account.kind == "customer"


def _move(session: Session, leg: Leg) -> None:
    """One conditional UPDATE (Core: it runs per ledger line, on the hot path)."""
    row = session.connection().execute(_MOVES[(leg.balance_type, _guarded(leg))],
                                       {"account_id": leg.account.id, "delta": leg.amount}).first()
    _moved(leg.account, leg.balance_type, row)


def _moved(account: Account, balance_type: str, row) -> None:
    """After a conditional move of ``account``: no row returned, it did not hold enough ``balance_type``
    (402); else the object shows the balances and version the UPDATE returned."""
    if row is None:
        raise InsufficientFunds(f"account {account.id} does not hold enough {balance_type} balance",
                                param="amount")
    for name, value in zip(("available", "pending", "version"), row, strict=True):
        set_committed_value(account, name, value)


def _each_move_once(legs: list[Leg]) -> bool:
    """No customer account is moved twice in one balance by an entry: its moves can then be applied
    as one row change per account, each checked as the UPDATE of its own would check it."""
    seen = [(leg.account.id, leg.balance_type) for leg in legs if leg.account.kind != "system"]
    return len(seen) == len(set(seen))


# PostgreSQL: an entry, its lines, its system accounts' queued moves and the move of its first customer
# account (in id order) in one statement (data-modifying CTEs: all of it happens, or the statement fails,
# as the separate statements would); each further customer account's move is one more statement, in id
# order, so two postings on one pair of accounts lock them in the same order and cannot deadlock (one
# UPDATE of several rows locks them in whatever order its plan reads them; and a row locked by a
# ``SELECT … FOR UPDATE`` CTE and then updated in the same statement deadlocked under concurrent
# waiters). An account is moved by all its lines at once, each balance checked as ``_MOVES`` checks it
# (a customer's debit is refused when short); a row not returned did not hold enough. Arrays go as text
# (``writebehind.array_literal``), so the text is fixed and prepared once per shape.
_ONE_ENTRY = ("INSERT INTO journal_entries (id, merchant_id, kind, source_id, description, request_id, created_at) "
              "VALUES (CAST(:entry_id AS TEXT), CAST(:merchant_id AS TEXT), CAST(:kind AS TEXT), "
              "CAST(:source_id AS TEXT), CAST(:description AS TEXT), CAST(:request_id AS TEXT), "
              "CAST(:created_at AS TIMESTAMP))")
_ONE_LINES = ("INSERT INTO ledger_lines (id, entry_id, account_id, balance_type, amount, currency, request_id, "
              "created_at) SELECT l.id, CAST(:entry_id AS TEXT), l.account_id, l.balance_type, l.amount, l.currency, "
              "CAST(:request_id AS TEXT), CAST(:created_at AS TIMESTAMP) FROM unnest(CAST(:line_ids AS TEXT[]), "
              "CAST(:line_accounts AS TEXT[]), CAST(:line_balances AS TEXT[]), CAST(:line_amounts AS BIGINT[]), "
              "CAST(:line_currencies AS TEXT[])) AS l(id, account_id, balance_type, amount, currency)")
_ONE_QUEUED = ("INSERT INTO account_moves (account_id, balance_type, delta, created_at) SELECT q.account_id, "
               "q.balance_type, q.delta, CAST(:created_at AS TIMESTAMP) FROM unnest(CAST(:queued_accounts AS TEXT[]), "
               "CAST(:queued_balances AS TEXT[]), CAST(:queued_deltas AS BIGINT[])) AS q(account_id, balance_type, "
               "delta)")
_ONE_MOVE = ("UPDATE accounts SET available = available + CAST(:available AS BIGINT), "
             "pending = pending + CAST(:pending AS BIGINT), version = version + CAST(:moves AS INTEGER) "
             "WHERE id = CAST(:account_id AS TEXT) "
             "AND (NOT CAST(:guard_available AS BOOLEAN) OR available + CAST(:available AS BIGINT) >= 0) "
             "AND (NOT CAST(:guard_pending AS BOOLEAN) OR pending + CAST(:pending AS BIGINT) >= 0) "
             "RETURNING available, pending, version")
_one_statements: dict[tuple[bool, bool], object] = {}


def _one_statement(queued: bool, moved: bool):
    """The statement of ``_post_in_one_statement`` for an entry with (or without) queued moves and a
    customer account's move, built once per shape; ``moved`` alone: a further account's move."""
    statement = _one_statements.get((queued, moved))
    if statement is None:
        parts = [("entry", _ONE_ENTRY), ("lines", _ONE_LINES)] + ([("queued", _ONE_QUEUED)] if queued else [])
        main = _ONE_MOVE if moved else parts.pop()[1]
        statement = _one_statements[(queued, moved)] = text(
            "WITH " + ", ".join(f"{name} AS ({sql})" for name, sql in parts) + " " + main)
    return statement


_ONE_FURTHER_MOVE = text(_ONE_MOVE)


def _post_in_one_statement(session: Session, entry_id: str, merchant_id: str, kind: str, source_id: str | None,
                           description: str | None, legs: list[Leg], request_id: str | None, now,
                           at_commit: bool = False) -> None:
    """``post`` on PostgreSQL outside a batch: what it writes, in one statement (``_one_statement``)
    and one more per further customer account; ``at_commit``: the entry, its lines and queued moves
    in one statement, the customer accounts' moves just before the COMMIT."""
    array = writebehind.array_literal
    queued = _queued_moves(legs)
    moved: dict[str, dict] = {}  # customer account id → its deltas, which of them are checked, how many lines
    accounts: dict[str, Account] = {}
    for leg in legs:
        if leg.account.kind == "system":
            continue
        accounts[leg.account.id] = leg.account
        move = moved.setdefault(leg.account.id, {"account_id": leg.account.id, AVAILABLE: 0, PENDING: 0,
                                                 "guard_available": False, "guard_pending": False, "moves": 0})
        move[leg.balance_type] += leg.amount
        move["moves"] += 1
        if _guarded(leg):
            move[f"guard_{leg.balance_type}"] = True
    params = {
        "entry_id": entry_id, "merchant_id": merchant_id, "kind": kind, "source_id": source_id,
        "description": description, "request_id": request_id, "created_at": now,
        "line_ids": array([new_id("ln") for _leg in legs]),
        "line_accounts": array([leg.account.id for leg in legs]),
        "line_balances": array([leg.balance_type for leg in legs]),
        "line_amounts": array([leg.amount for leg in legs]),
        "line_currencies": array([leg.account.currency for leg in legs]),
    }
    if queued:
        params.update(queued_accounts=array([account_id for account_id, _balance in queued]),
                      queued_balances=array([balance for _account_id, balance in queued]),
                      queued_deltas=array(list(queued.values())))
    ids = sorted(moved)
    if at_commit and ids:
        session.connection().execute(_one_statement(bool(queued), False), params)
        _queue_at_commit(session, [moved[account_id] for account_id in ids])
        return
    if ids:
        params.update(moved[ids[0]])
    connection = session.connection()
    result = connection.execute(_one_statement(bool(queued), bool(ids)), params)
    for index, account_id in enumerate(ids):  # the first short account in id order stops the posting
        row = (result if index == 0 else connection.execute(_ONE_FURTHER_MOVE, moved[account_id])).first()
        _moved(accounts[account_id], AVAILABLE if moved[account_id]["guard_available"] else PENDING, row)


# Customer accounts' moves sent just before the COMMIT (``post(at_commit=True)``): one UPDATE each, the
# further move's statement with its guards off (``_UNGUARDED``), for the accounts' CHECK refuses a
# customer's balance below zero, so a short account fails the statement and with it the COMMIT (a
# guarded UPDATE matching no row would not: its answer, read only after the COMMIT was sent, would come
# too late). Queued with ``db.just_before_commit``, each with the (sub)transaction it was queued in, so a
# savepoint rolled back takes its moves with it.
_UNGUARDED = {"guard_available": False, "guard_pending": False}
_NO_OVERDRAFT = "ck_accounts_no_overdraft"
_AS_THEY_GO: ContextVar[bool] = ContextVar("payrouter_ledger_as_they_go", default=False)


def _queue_at_commit(session: Session, moves: list[dict]) -> None:
    for move in moves:
        just_before_commit(session, _send_at_commit, move)


def _send_at_commit(session: Session, moves: list[dict]) -> None:
    """The queued moves, in account-id order (two transactions on one pair lock it in the same
    order): inside ``db.committed`` they go in the COMMIT's round trip."""
    connection = session.connection()
    for move in sorted(moves, key=lambda move: move["account_id"]):
        connection.execute(_ONE_FURTHER_MOVE, {**move, **_UNGUARDED})


def refused_at_commit(error: BaseException) -> bool:
    """Whether ``error`` is a customer's move refused at the COMMIT (``post(at_commit=True)``)."""
    diag = getattr(getattr(error, "orig", None), "diag", None)
    return isinstance(error, IntegrityError) and getattr(diag, "constraint_name", None) == _NO_OVERDRAFT


@contextlib.contextmanager
def moves_as_they_go():
    """Inside: ``post`` moves balances as it goes even when asked to wait for the commit (work whose
    move was refused at the COMMIT runs again this way, to answer with the account that fell short)."""
    token = _AS_THEY_GO.set(True)
    try:
        yield
    finally:
        _AS_THEY_GO.reset(token)
