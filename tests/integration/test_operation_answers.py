"""A create answers with the attempts it wrote itself (app.services.operations.Made): answering
reads no attempt back from the database, and a refusal after the limits were reserved carries
the decision it was made under."""
import contextlib
import threading

from sqlalchemy import event

from app.adapters.db import get_engine
from tests import builders


@contextlib.contextmanager
def attempt_reads():
    """The statements this thread sends that read the attempts table."""
    me, reads = threading.get_ident(), []

    def seen(conn, cursor, statement, parameters, context, executemany):
        if threading.get_ident() == me and statement.lstrip().upper().startswith("SELECT") \
                and "FROM attempts" in statement:
            reads.append(statement)

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", seen)
    try:
        yield reads
    finally:
        event.remove(engine, "before_cursor_execute", seen)


def test_a_payment_through_a_channel_answers_with_the_attempts_it_wrote(stack):
    api = builders.api(stack.client)
    for amount, status in ((2000, "succeeded"), (2051, "failed"), (2052, "processing")):
        with attempt_reads() as reads:
            response = api.post("/v1/payments", builders.payment_body(amount))
        payment = response.get_json()
        assert response.status_code == 201 and payment["status"] == status, payment
        assert [a["channel"] for a in payment["attempts"]] == ["sandbox"]
        # a processing answer re-reads the operation and its attempts once (a callback may have settled it)
        assert len(reads) == (1 if status == "processing" else 0), reads
        assert api.get(f"/v1/payments/{payment['id']}").get_json()["attempts"] == payment["attempts"]


def test_payments_and_refunds_inside_the_ledger_read_no_attempts(stack):
    api = builders.api(stack.client)
    wallet = api.account(funded=5000)
    with attempt_reads() as reads:
        payment = api.post("/v1/payments", builders.payment_body(
            1200, payment_method={"type": "balance", "account": wallet["id"]})).get_json()
        refund = api.post("/v1/refunds", {"payment": payment["id"], "reference": builders.unique("re")}).get_json()
    assert payment["status"] == refund["status"] == "succeeded"
    assert payment["attempts"] == refund["attempts"] == []
    assert reads == []


def test_a_refusal_after_the_limits_were_reserved_carries_its_decision(stack):
    api = builders.api(stack.client)
    wallet = api.account(funded=100)
    response = api.post("/v1/payments", builders.payment_body(
        1200, payment_method={"type": "balance", "account": wallet["id"]}))
    error = response.get_json()["error"]
    assert response.status_code == 402 and error["code"] == "insufficient_funds"
    assert error["decision"]["outcome"] == "route" and error["decision"]["ruleset_version"] == 1
