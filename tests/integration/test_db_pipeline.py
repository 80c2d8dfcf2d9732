"""db.pipelined: statements sent without waiting for each answer still fail their transaction."""
import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from app.adapters.db import pipelined, unit_of_work
from app.adapters.models import Event, utcnow
from tests import builders


def _event(merchant_id: str, event_id: str, object_id: str) -> dict:
    return {"id": event_id, "merchant_id": merchant_id, "type": "test.pipelined", "object_id": object_id,
            "data": {}, "relayed": False, "created_at": utcnow()}


def _count() -> int:
    with unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(Event).where(Event.type == "test.pipelined"))


def test_pipelined_statements_and_commit_land_together(clean):
    merchant_id, _ = builders.merchant()
    with unit_of_work() as session:
        with pipelined(session):
            driver = session.connection().connection.driver_connection
            if hasattr(driver, "pipeline"):  # PostgreSQL: really in pipeline mode here
                assert driver._pipeline is not None
            for i in range(3):
                session.execute(insert(Event), _event(merchant_id, f"evt_ok{i}", f"obj_{i}"))
            session.commit()
    assert _count() == 3


def test_an_error_in_a_pipelined_statement_fails_the_whole_transaction(clean):
    merchant_id, _ = builders.merchant()
    with pytest.raises(IntegrityError):
        with unit_of_work() as session:
            session.execute(insert(Event), _event(merchant_id, "evt_first", "obj_a"))
            with pipelined(session):
                session.execute(insert(Event), _event(merchant_id, "evt_second", "obj_b"))
                session.execute(insert(Event), _event(merchant_id, "evt_first", "obj_c"))  # same id: refused
                session.execute(insert(Event), _event(merchant_id, "evt_third", "obj_d"))
                session.commit()
    assert _count() == 0  # nothing before, in or after the failed statement was kept


def test_an_error_surfaces_as_sqlalchemys_when_the_block_ends(clean):
    """No COMMIT inside (as when a settlement's postings are sent): the refused insert is reported
    at the end of the block, as SQLAlchemy's IntegrityError, and nothing of the transaction stays."""
    merchant_id, _ = builders.merchant()
    with pytest.raises(IntegrityError):
        with unit_of_work() as session:
            with pipelined(session):
                session.execute(insert(Event), _event(merchant_id, "evt_one", "obj_a"))
                session.execute(insert(Event), _event(merchant_id, "evt_one", "obj_b"))  # same id: refused
            session.execute(insert(Event), _event(merchant_id, "evt_after", "obj_c"))
    assert _count() == 0
