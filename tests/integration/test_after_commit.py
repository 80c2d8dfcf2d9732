"""app.adapters.db.after_commit: what a transaction hands on runs once it commits, and never after a
rollback (the settled-operations counter and the success-rate outcomes both count through it)."""
from __future__ import annotations

import pytest
from sqlalchemy import text

from app.adapters import db

ran: list[list] = []


def _run(items: list) -> None:
    ran.append(list(items))


def _other(items: list) -> None:
    ran.append(["other", *items])


@pytest.fixture
def session(clean):
    ran.clear()
    s = db.session_factory(clean)()
    s.execute(text("SELECT 1"))
    yield s
    s.close()


def test_items_run_once_after_the_commit_in_order_one_call_per_consumer(session):
    db.after_commit(session, _run, 1)
    db.after_commit(session, _other, "a")
    db.after_commit(session, _run, 2)
    assert ran == []  # nothing before the commit
    session.commit()
    assert ran == [[1, 2], ["other", "a"]]
    session.execute(text("SELECT 1"))
    session.commit()  # a later commit of the same session runs nothing again
    assert ran == [[1, 2], ["other", "a"]]


def test_a_rolled_back_transaction_runs_nothing_now_or_at_a_later_commit(session):
    db.after_commit(session, _run, 1)
    session.rollback()
    session.execute(text("SELECT 1"))
    session.commit()
    assert ran == []


def test_a_unit_of_work_that_fails_runs_nothing(clean):
    ran.clear()
    with pytest.raises(RuntimeError):
        with db.unit_of_work(clean) as s:
            db.after_commit(s, _run, 1)  # nothing executed yet: the helper begins the transaction itself
            raise RuntimeError("refused")
    with db.unit_of_work(clean) as s:
        db.after_commit(s, _run, 2)
    assert ran == [[2]]


def test_a_rolled_back_savepoint_drops_only_its_own_items(session):
    db.after_commit(session, _run, "outer")
    savepoint = session.begin_nested()
    db.after_commit(session, _run, "inner")
    savepoint.rollback()
    with session.begin_nested():
        db.after_commit(session, _run, "released")
    assert ran == []  # a savepoint's release is not the commit
    session.commit()
    assert ran == [["outer", "released"]]


def test_a_released_savepoint_under_a_rolled_back_transaction_runs_nothing(session):
    with session.begin_nested():
        db.after_commit(session, _run, "inner")
    session.rollback()
    assert ran == []


def test_a_session_closed_without_commit_runs_nothing(clean):
    ran.clear()
    s = db.session_factory(clean)()
    db.after_commit(s, _run, 1)
    s.close()
    s.execute(text("SELECT 1"))
    s.commit()
    assert ran == []
