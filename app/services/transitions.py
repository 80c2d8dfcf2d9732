"""The one compare-and-set function that moves an operation between states.

``UPDATE … SET status = :to, version = version + 1 WHERE id = :id AND status = :from AND
version = :version``: a transition that lost a race, or a repeated one, matches no row
and changes nothing (it is logged and reported as False).
"""
from __future__ import annotations

import logging

from sqlalchemy import bindparam, func, literal_column, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from app.adapters.db import execute_all_matched
from app.adapters.models import Operation, utcnow
from app.domain.states import allowed

log = logging.getLogger("payrouter.state")


_TABLE = Operation.__table__
# Built once; the SET clause comes from the execution parameters (column names).
_CAS = update(_TABLE).where(_TABLE.c.id == bindparam("cas_id"), _TABLE.c.status == bindparam("cas_status"),
                            _TABLE.c.version == bindparam("cas_version"))
_COLUMN = {prop.key: prop.columns[0].name for prop in Operation.__mapper__.column_attrs}


def _cas(op: Operation, target: str, changes: dict) -> tuple[dict, dict]:
    """The values a transition sets, and the statement's parameters (the SET columns and the
    compare-and-set on the current status and version)."""
    values = {"status": target, "version": op.version + 1, "updated_at": utcnow(), **changes}
    params = {_COLUMN[k]: v for k, v in values.items()}
    params.update(cas_id=op.id, cas_status=op.status, cas_version=op.version)
    return values, params


def _commit_values(op: Operation, values: dict) -> None:
    for name, value in values.items():
        set_committed_value(op, name, value)


def transition(session: Session, op: Operation, target: str, **changes) -> bool:
    """``transition_all`` of one operation. One compare-and-set tells exactly whether it lost a race,
    and then the operation is read again, so it shows its row as it is now."""
    if transition_all(session, [(op, target, changes)]):
        return True
    if allowed(op.status, target, op.kind):  # not refused: it lost a race
        session.refresh(op)
    return False


def transition_beside(session: Session, op: Operation, target: str, beside, beside_params: dict,
                      **changes) -> tuple[bool, bool]:
    """``transition`` of one operation together with ``beside``, a conditional UPDATE of another
    table that does not depend on the transition's outcome (an attempt closed with the answer that
    also settles its operation), run first: (the transition won, ``beside`` matched its row). On
    PostgreSQL both are one statement (data-modifying CTEs, ``beside`` before the compare-and-set);
    elsewhere (and for a move the state machine refuses) ``beside``, then ``transition``. ``beside``'s
    SET values are bind parameters of its own names (none starting ``cas_``)."""
    connection = session.connection()
    if connection.dialect.name != "postgresql" or not allowed(op.status, target, op.kind):
        beside_matched = connection.execute(beside, beside_params).rowcount == 1
        return transition(session, op, target, **changes), beside_matched
    values, params = _cas(op, target, changes)
    row = connection.execute(_cas_beside(beside, tuple(params)), {
        **beside_params, **{f"cas_set_{k}" if k in _SET_COLUMNS else k: v for k, v in params.items()}}).one()
    beside_matched, won = row[0] == 1, row[1] == 1
    if won:
        _commit_values(op, values)
    else:
        log.info("%s lost a race", _described([(op, target, changes)]))
        session.refresh(op)
    return won, beside_matched


_SET_COLUMNS = frozenset(_TABLE.c.keys())
_cas_beside_statements: dict[tuple, object] = {}


def _cas_beside(beside, names: tuple[str, ...]):
    """``SELECT (SELECT count(*) FROM beside), (SELECT count(*) FROM cas)`` with both UPDATEs as
    CTEs (PostgreSQL runs ``beside`` first: the select list is evaluated in order), built once per
    ``beside`` and set of changed columns; the compare-and-set is ``_CAS`` with its SET values named."""
    key = (id(beside), names)
    statement = _cas_beside_statements.get(key)
    if statement is None:
        set_values = {name: bindparam(f"cas_set_{name}", type_=_TABLE.c[name].type)
                      for name in names if name in _SET_COLUMNS}
        cas = _CAS.values(set_values).returning(literal_column("1")).cte("cas")
        side = beside.returning(literal_column("1")).cte("beside")
        statement = _cas_beside_statements[key] = select(
            select(func.count()).select_from(side).scalar_subquery(),
            select(func.count()).select_from(cas).scalar_subquery())
    return statement


def transition_all(session: Session, moves: list[tuple[Operation, str, dict]]) -> bool:
    """Transitions ``(operation, target, changed columns)``, each a compare-and-set, sent as one
    executemany per set of changed columns (one round trip on PostgreSQL). True if every one won,
    and then each operation shows its new state. False if any was refused (not in the state
    machine: nothing is sent) or lost a race: an executemany tells only how many rows matched,
    not which, so the caller of a batch must roll back what it wrote since (the callback drain
    replays its batch one callback at a time)."""
    refused = [(op, target) for op, target, _changes in moves if not allowed(op.status, target, op.kind)]
    for op, target in refused:
        log.info("transition %s -> %s of %s refused: not in the state machine", op.status, target, op.id)
    if refused:
        return False
    planned = [(op, *_cas(op, target, changes)) for op, target, changes in moves]
    if not execute_all_matched(session.connection(), _CAS, [params for _op, _values, params in planned]):
        log.info("%s lost a race", _described(moves))
        return False
    for op, values, _params in planned:
        _commit_values(op, values)
    return True


def _described(moves: list[tuple[Operation, str, dict]]) -> str:
    if len(moves) == 1:
        op, target, _changes = moves[0]
        return f"transition {op.status} -> {target} of {op.id}"
    return f"a batch of {len(moves)} transitions"
