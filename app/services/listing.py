"""Keyset pagination and filters shared by every list endpoint: newest first, ties by id.

A page is two statements whatever its depth: the cursor's row (``starting_after`` or
``ending_before``), then the page, whose position is the row comparison
``(created_at, id) < (:t, :id)``. PostgreSQL takes a row comparison on the trailing columns of
an index whose leading columns are equalities as an index condition, so a page deep into a
list reads only its own rows; the equivalent ``created_at < :t OR (created_at = :t AND id < :id)``
is only a filter there, and paging through a list that way is quadratic. Each filter has an
index that leads with the list's own columns, then the filter, then (created_at, id)
(migration 0018).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import literal_column, select, tuple_
from sqlalchemy.orm import Session

from app.domain.errors import InvalidRequest

# The filters a list may take (contract §1, Lists); each collection names those whose field it has.
FILTERS = ("status", "customer", "reference", "order", "channel", "payment")
CREATED = ("created[gte]", "created[lt]")


@dataclass(frozen=True)
class ListQuery:
    """A list request, checked (app.services.validation.list_params): its page and its filters."""

    limit: int = 10
    starting_after: str | None = None
    ending_before: str | None = None
    filters: dict[str, str] = field(default_factory=dict)  # name (of FILTERS) → value
    created_gte: datetime | None = None
    created_lt: datetime | None = None


@dataclass(frozen=True)
class Page:
    items: list
    has_more: bool


def customer_id(model):
    """The customer id inside a JSON ``customer`` column, written as the expression index holds
    it (``customer ->> 'id'``: the same on PostgreSQL and SQLite ≥ 3.38), so the index serves it."""
    return literal_column(f"({model.__tablename__}.customer ->> 'id')")


def page(session: Session, model, *, merchant_id: str | None, limit: int = 10, starting_after: str | None = None,
         where=(), query: ListQuery | None = None, columns: dict | None = None, statement=None) -> Page:
    """One page of ``model`` rows of this merchant (None: ``where`` alone scopes the list) and
    ``where`` (the list's own scope), newest first (created_at, then id). ``query``: the request's
    cursors and filters; ``columns``: what each filter named in it compares (default: the model's
    attribute of that name); ``statement``: a select of ``model`` and more (items are then rows)."""
    query = query or ListQuery(limit=limit, starting_after=starting_after)
    scope = (*((model.merchant_id == merchant_id,) if merchant_id is not None else ()), *where)
    conditions = [*scope, *_filters(model, query, columns or {})]
    position = (model.created_at, model.id)
    backwards = query.ending_before is not None
    cursor_id = query.ending_before if backwards else query.starting_after
    if cursor_id:
        # The cursor is found in the list's scope, not its filters: any object of the list marks a place.
        cursor = session.execute(select(*position).where(*scope, model.id == cursor_id)).first()
        if cursor is None:
            param = "ending_before" if backwards else "starting_after"
            raise InvalidRequest(f"{param}: no such object {cursor_id}", param=param, code="resource_missing")
        if backwards:
            conditions.append(tuple_(*position) > tuple_(*cursor))
        else:
            conditions.append(tuple_(*position) < tuple_(*cursor))
    order = (model.created_at.asc(), model.id.asc()) if backwards else (model.created_at.desc(), model.id.desc())
    if statement is None:
        rows = list(session.scalars(select(model).where(*conditions).order_by(*order).limit(query.limit + 1)))
    else:
        rows = [tuple(row) for row in session.execute(statement.where(*conditions).order_by(*order)
                                                      .limit(query.limit + 1))]
    items = rows[:query.limit]
    return Page(items=items[::-1] if backwards else items, has_more=len(rows) > query.limit)


def _filters(model, query: ListQuery, columns: dict) -> list:
    out = []
    for name, value in query.filters.items():
        column = columns.get(name)
        if column is None:
            column = customer_id(model) if name == "customer" else getattr(model, name)
        out.append(column == value)
    if query.created_gte is not None:
        out.append(model.created_at >= query.created_gte)
    if query.created_lt is not None:
        out.append(model.created_at < query.created_lt)
    return out
