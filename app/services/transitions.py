"""The one compare-and-set function that moves an operation between states.

``UPDATE … SET status = :to, version = version + 1 WHERE id = :id AND status = :from AND
version = :version``: a transition that lost a race, or a repeated one, matches no row
and changes nothing (it is logged and reported as False).
"""
from __future__ import annotations

import logging

from sqlalchemy import bindparam, update
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
    if not allowed(op.status, target):
        log.info("transition %s -> %s of %s refused: not in the state machine", op.status, target, op.id)
        return False
    values, params = _cas(op, target, changes)
    result = session.connection().execute(_CAS, params)
    if result.rowcount != 1:
        log.info("transition %s -> %s of %s lost a race; nothing changed", op.status, target, op.id)
        session.refresh(op)
        return False
    _commit_values(op, values)
    return True


def transition_all(session: Session, moves: list[tuple[Operation, str, dict]]) -> bool:
    """Several transitions at once, each the same compare-and-set as ``transition``, sent as one
    executemany per set of changed columns (one round trip on PostgreSQL). True if every one
    won, and then each operation shows its new state. False if any was refused or lost a race:
    the executemany tells only how many rows matched, not which, so the caller must roll back
    what it wrote since (the callback drain replays its batch one callback at a time)."""
    if any(not allowed(op.status, target) for op, target, _changes in moves):
        return False
    planned = [(op, *_cas(op, target, changes)) for op, target, changes in moves]
    if not execute_all_matched(session.connection(), _CAS, [params for _op, _values, params in planned]):
        log.info("a batch of %s transitions lost a race; rolling back to apply them one by one", len(moves))
        return False
    for op, values, _params in planned:
        _commit_values(op, values)
    return True
