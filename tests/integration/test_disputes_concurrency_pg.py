"""A refund and a dispute of one payment at the same instant on PostgreSQL: together they never take
back more than the payment. Each path decides on what the payment has left (the refund: "is it
disputed?"; the dispute: "what is left after refunds?"), so both must decide on the payment's row
locked, one after the other.

The instant is made exact rather than hoped for: a third connection holds a row while a refund (over
HTTP) and the drain applying a chargeback of the full amount (in a thread, as the worker runs it)
start; each either finishes or waits; then the row is let go. Either of two rows is held:

- the payment's (``FOR NO KEY UPDATE``, the lock both paths take): without the drain's lock, the
  drain reads what is left and writes the dispute without waiting, while the refund, having seen no
  dispute, waits only to write its reservation: both go through;
- the dispute's unique key (the same dispute inserted, uncommitted): the drain waits to insert, and
  the refund must wait for it before its "is it disputed?". Without the refund's lock taken before
  that check, the refund sees no dispute yet and commits first; without the drain's, the drain has
  already measured what is left: either way both go through. (The held insert's foreign-key check
  holds the payment ``FOR KEY SHARE``, which neither path's lock waits for.)

On SQLite writers are serialised (``BEGIN IMMEDIATE``): there is no such instant to test.
"""
import contextvars
import threading

import pytest
import requests
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from app.adapters import db
from app.adapters.channels_runtime import channel
from app.adapters.db import unit_of_work
from app.adapters.models import ChannelCallback, Dispute, Operation, new_id, utcnow
from app.services import callbacks
from tests import builders
from tests.support import wait_until

pytestmark = pytest.mark.postgres


def _payment_row(conn, payment: Operation, _dispute_reference: str) -> None:
    conn.execute(text("SELECT id FROM operations WHERE id = :id FOR NO KEY UPDATE"), {"id": payment.id})


def _dispute_key(conn, payment: Operation, dispute_reference: str) -> None:
    now = utcnow()
    with Session(bind=conn) as session:
        session.add(Dispute(id=new_id("dp"), merchant_id=payment.merchant_id, livemode=False, payment_id=payment.id,
                            amount=1, currency=payment.currency, reason="held", status="needs_response", version=0,
                            channel=payment.channel, channel_reference=dispute_reference, metadata_={},
                            created_at=now, updated_at=now))
        session.flush()


def _waiting(stack) -> int:
    """How many of this database's backends wait for a lock (on the held row: the first behind the
    holder, the next behind the first)."""
    with db.get_engine(stack.config).connect() as conn:
        return conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                 "AND cardinality(pg_blocking_pids(pid)) > 0")).scalar_one()


def _judged_once_due(payment_id: str) -> str:
    """The outcome of a chargeback kept waiting for a refund in flight (``waiting_refund``, due again
    in DISPUTE_WAIT), judged now that the refund has ended: made due at once and drained."""
    with unit_of_work() as session:
        session.execute(update(ChannelCallback).where(ChannelCallback.reference == payment_id,
                                                      ChannelCallback.processed_at.is_(None))
                        .values(received_at=utcnow()))
    callbacks.drain()
    with unit_of_work() as session:
        [notice] = [row.outcome for row in session.scalars(
            select(ChannelCallback).where(ChannelCallback.reference == payment_id)) if row.dispute]
    return notice


@pytest.mark.parametrize("hold", [_payment_row, _dispute_key])
def test_a_refund_and_a_dispute_at_the_same_instant_never_take_back_more_than_the_payment(stack, hold):
    api = builders.api(stack.client)
    engine = db.get_engine(stack.config)
    outcomes = []
    for _ in range(3):
        payment = api.post("/v1/payments", builders.payment_body(2000)).get_json()
        assert payment["status"] == "succeeded", payment
        with unit_of_work() as session:
            op = session.get(Operation, payment["id"])
            session.expunge(op)
        dispute_reference = builders.unique("sbxdp")
        body, headers = builders.signed_dispute_callback(channel("sandbox"), op.id, op.channel_reference,
                                                         dispute_reference, "needs_response", 2000)
        assert requests.post(f"{stack.api_url}/callbacks/sandbox", data=body, headers=headers,
                             timeout=10).status_code == 200  # in the inbox, applied by the drain below
        holder = engine.connect()
        holder.begin()
        hold(holder, op, dispute_reference)
        answers: dict[str, object] = {}

        def refund(pid=op.id, answers=answers):
            answers["refund"] = requests.post(f"{stack.api_url}/v1/refunds", json=builders.refund_body(pid),
                                              headers=api.headers(builders.unique("race")), timeout=60)

        def drain(answers=answers):
            answers["drain"] = callbacks.drain()

        threads = [threading.Thread(target=refund),
                   threading.Thread(target=contextvars.copy_context().run, args=(drain,))]
        try:
            for thread in threads:
                thread.start()
            # Each has either gone through already or waits on the held row: the same instant.
            wait_until(lambda answers=answers: _waiting(stack) + len(answers) == 2, timeout=20,
                       what="the refund and the dispute each done or waiting")
        finally:
            holder.rollback()
            holder.close()
        for thread in threads:
            thread.join(60)
        refunded = answers["refund"]
        with unit_of_work() as session:
            disputed = sum(session.scalars(select(Dispute.amount).where(Dispute.payment_id == op.id)))
            [notice] = [row.outcome for row in session.scalars(
                select(ChannelCallback).where(ChannelCallback.reference == op.id)) if row.dispute]
        taken = (refunded.json()["amount"] if refunded.status_code == 201 else 0) + disputed
        assert taken <= 2000, (refunded.status_code, refunded.text, disputed, notice)
        # Exactly one of them: the refund (and the chargeback does not fit: set aside), or the dispute
        # (and the refund is refused as the payment's disputed).
        if refunded.status_code == 201:
            if notice == "waiting_refund":  # the drain met the refund reserved, its channel's answer not applied
                notice = _judged_once_due(op.id)
            assert (disputed, notice) == (0, "dispute_mismatch"), notice
        else:
            assert refunded.status_code == 409 and refunded.json()["error"]["code"] == "payment_disputed"
            assert (disputed, notice) == (2000, "applied")
        outcomes.append(refunded.status_code)
    assert len(outcomes) == 3
