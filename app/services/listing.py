"""Cursor pagination shared by every list endpoint: newest first, ties by id."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from app.domain.errors import InvalidRequest


@dataclass(frozen=True)
class Page:
    items: list
    has_more: bool


def page(session: Session, model, *, merchant_id: str, limit: int, starting_after: str | None,
         where=()) -> Page:
    """One page of ``model`` rows of this merchant, newest first (created_at, then id)."""
    query = select(model).where(model.merchant_id == merchant_id, *where)
    if starting_after:
        cursor = session.scalars(select(model).where(model.merchant_id == merchant_id, model.id == starting_after,
                                                     *where)).first()
        if cursor is None:
            raise InvalidRequest(f"starting_after: no such object {starting_after}", param="starting_after",
                                 code="resource_missing")
        query = query.where(or_(model.created_at < cursor.created_at,
                                and_(model.created_at == cursor.created_at, model.id < cursor.id)))
    rows = list(session.scalars(query.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)))
    return Page(items=rows[:limit], has_more=len(rows) > limit)
