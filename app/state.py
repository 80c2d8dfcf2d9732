"""The one compare-and-set function that moves an operation between states.

``UPDATE … SET status = :to, version = version + 1 WHERE id = :id AND status = :from AND
version = :version``: a transition that lost a race, or a repeated one, matches no row
and changes nothing (it is logged and reported as False).
"""
from __future__ import annotations

import logging

from sqlalchemy import update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from app.domain.states import allowed
from app.models import Operation, utcnow

log = logging.getLogger("payrouter.state")


def transition(session: Session, op: Operation, target: str, **changes) -> bool:
    if not allowed(op.status, target):
        log.info("transition %s -> %s of %s refused: not in the state machine", op.status, target, op.id)
        return False
    values = {"status": target, "version": op.version + 1, "updated_at": utcnow(), **changes}
    table = Operation.__table__
    result = session.connection().execute(
        update(table)
        .where(table.c.id == op.id, table.c.status == op.status, table.c.version == op.version)
        .values({Operation.__mapper__.get_property(k).columns[0].name: v for k, v in values.items()}))
    if result.rowcount != 1:
        log.info("transition %s -> %s of %s lost a race; nothing changed", op.status, target, op.id)
        session.refresh(op)
        return False
    for name, value in values.items():
        set_committed_value(op, name, value)
    return True
