"""Rows inserted by app.adapters.writebehind, now or at the end of a batch, land exactly as given: on
PostgreSQL several rows go as one ``INSERT … SELECT unnest(…)``, elsewhere as an executemany."""
import datetime as dt

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import StatementError

from app.adapters import writebehind
from app.adapters.db import get_engine, read_only, unit_of_work
from app.adapters.models import Event, utcnow
from tests import builders
from tests.conftest import on_postgres


def _event_rows(merchant_id: str, n: int) -> list[dict]:
    now = utcnow().replace(microsecond=0)
    return [{"id": builders.unique("evt"), "merchant_id": merchant_id, "livemode": i % 4 == 1,
             "type": "payment.succeeded",
             "object_id": builders.unique("pay"), "data": {"n": i, "nested": {"list": [1, "two", None]}, "é": "ü"},
             "request_id": None if i % 2 else f"req_{i}", "relayed": bool(i % 3 == 0),
             "created_at": now + dt.timedelta(seconds=i)} for i in range(n)]


def _stored(ids: list[str]) -> list[dict]:
    with unit_of_work() as session:
        found = {e.id: e for e in session.scalars(select(Event).where(Event.id.in_(ids)))}
    return [{"id": e.id, "merchant_id": e.merchant_id, "livemode": e.livemode, "type": e.type,
             "object_id": e.object_id, "data": e.data,
             "request_id": e.request_id, "relayed": e.relayed, "created_at": e.created_at}
            for e in (found[i] for i in ids)]


def _inserts_seen():
    seen: list[str] = []

    def record(_conn, _cursor, statement, _params, _context, executemany):
        if statement.lstrip().upper().startswith("INSERT INTO EVENTS"):
            seen.append(("many " if executemany else "one ") + " ".join(statement.split()))

    return seen, record


def test_rows_inserted_at_once_and_at_the_end_of_a_batch_are_stored_exactly(clean):
    merchant_id, _ = builders.merchant()
    now_rows, batch_rows = _event_rows(merchant_id, 3), _event_rows(merchant_id, 25)
    seen, record = _inserts_seen()
    event.listen(get_engine(), "before_cursor_execute", record)
    try:
        with unit_of_work() as session:
            writebehind.insert_rows(session, Event.__table__, now_rows)
            with writebehind.batched(session, lambda _s, _b: None):
                for row in batch_rows:  # one at a time, as the drain's callbacks add them
                    writebehind.insert_rows(session, Event.__table__, [row])
                assert not _stored_ids(batch_rows)  # nothing written before the batch ends
    finally:
        event.remove(get_engine(), "before_cursor_execute", record)
    assert _stored([r["id"] for r in now_rows]) == now_rows
    assert _stored([r["id"] for r in batch_rows]) == batch_rows
    assert len(seen) == 2  # one statement (an executemany elsewhere) for the three rows, one for the batch's
    if on_postgres():  # each one INSERT … SELECT unnest(…)
        assert all(s.startswith("one ") and "unnest" in s for s in seen)


def test_rows_that_do_not_share_their_columns_are_refused_whole(clean):
    merchant_id, _ = builders.merchant()
    rows = _event_rows(merchant_id, 3)
    del rows[1]["request_id"]
    with pytest.raises(StatementError, match="request_id"), unit_of_work() as session:
        writebehind.insert_rows(session, Event.__table__, rows)
    assert _stored_ids(rows) == []


def _stored_ids(rows: list[dict]) -> list[str]:
    with read_only() as session:  # beside the open writing transaction (SQLite too)
        return list(session.scalars(select(Event.id).where(Event.id.in_([r["id"] for r in rows]))))


def test_a_left_out_column_with_a_python_default_gets_it_per_row(clean):
    """An INSERT … SELECT would evaluate the default once for all rows: such rows go as an executemany."""
    merchant_id, _ = builders.merchant()
    rows = _event_rows(merchant_id, 25)
    for row in rows:
        del row["created_at"]
    seen, record = _inserts_seen()
    event.listen(get_engine(), "before_cursor_execute", record)
    try:
        with unit_of_work() as session:
            writebehind.insert_rows(session, Event.__table__, rows)
    finally:
        event.remove(get_engine(), "before_cursor_execute", record)
    assert len(seen) == 1 and seen[0].startswith("many ")
    assert all(stored["created_at"] is not None for stored in _stored([r["id"] for r in rows]))


def test_a_value_too_long_for_its_column_is_refused_not_cut(clean):
    from sqlalchemy.exc import DBAPIError

    merchant_id, _ = builders.merchant()
    rows = _event_rows(merchant_id, 3)
    rows[1]["object_id"] = "x" * 500  # the column holds 40
    if not on_postgres():
        pytest.skip("SQLite does not enforce VARCHAR lengths")
    with pytest.raises(DBAPIError, match="too long"), unit_of_work() as session:
        writebehind.insert_rows(session, Event.__table__, rows)
    assert _stored_ids(rows) == []


def test_an_aware_time_is_stored_as_naive_utc(clean):
    """As psycopg stores one in a plain insert (the code itself only writes naive UTC)."""
    if not on_postgres():
        pytest.skip("SQLAlchemy's SQLite dates drop the offset; the code only writes naive UTC")
    merchant_id, _ = builders.merchant()
    rows = _event_rows(merchant_id, 2)
    plus_two = dt.timezone(dt.timedelta(hours=2))
    rows[0]["created_at"] = dt.datetime(2026, 12, 1, 12, 0, 0, tzinfo=plus_two)
    rows[1]["created_at"] = dt.datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=dt.timezone.utc)
    with unit_of_work() as session:
        writebehind.insert_rows(session, Event.__table__, rows)
    stored = _stored([r["id"] for r in rows])
    assert [s["created_at"] for s in stored] == [dt.datetime(2026, 12, 1, 10, 0, 0),
                                                 dt.datetime(2026, 12, 1, 12, 0, 0, 123456)]
