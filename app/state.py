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

from app.domain.states import allowed
from app.models import Operation, utcnow

log = logging.getLogger("payrouter.state")


_TABLE = Operation.__table__
# Built once; the SET clause comes from the execution parameters (column names).
_CAS = update(_TABLE).where(_TABLE.c.id == bindparam("cas_id"), _TABLE.c.status == bindparam("cas_status"),
                            _TABLE.c.version == bindparam("cas_version"))
_COLUMN = {prop.key: prop.columns[0].name for prop in Operation.__mapper__.column_attrs}


def transition(session: Session, op: Operation, target: str, **changes) -> bool:
    if not allowed(op.status, target):
        log.info("transition %s -> %s of %s refused: not in the state machine", op.status, target, op.id)
        return False
    values = {"status": target, "version": op.version + 1, "updated_at": utcnow(), **changes}
    params = {_COLUMN[k]: v for k, v in values.items()}
    params.update(cas_id=op.id, cas_status=op.status, cas_version=op.version)
    result = session.connection().execute(_CAS, params)
    if result.rowcount != 1:
        log.info("transition %s -> %s of %s lost a race; nothing changed", op.status, target, op.id)
        session.refresh(op)
        return False
    for name, value in values.items():
        set_committed_value(op, name, value)
    return True
