"""What a payment and a transfer send to the database, in order (issue #18: fewer statements, row
locks held for less time): a new payment's operation is inserted as processing with its first
channel, the row a pending insert and its first transition left, with no UPDATE before its attempt;
a transfer moves its accounts' balances last, so only the stored response is written between their
row locks and the commit."""
import threading

import pytest
from sqlalchemy import event, text

from app.adapters.db import get_engine, unit_of_work
from app.adapters.models import Operation
from tests import builders
from tests.wire import traced


def _sent(send) -> tuple[object, list[tuple[str, object]]]:
    """``send()``'s answer and the statements (one line each) this thread sent, with their parameters."""
    me, seen = threading.get_ident(), []

    def record(_conn, _cursor, statement, _parameters, context, _executemany):
        if threading.get_ident() == me:  # the parameters by name, whatever the driver's paramstyle
            named = getattr(context, "compiled_parameters", None) or [{}]  # none for SAVEPOINT and the like
            seen.append((" ".join(statement.split()), named[0]))

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", record)
    try:
        return send(), seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _index(seen, prefix: str) -> list[int]:
    return [i for i, (statement, _params) in enumerate(seen) if statement.startswith(prefix)]


def test_a_new_payment_is_inserted_as_processing_with_its_first_channel(stack):
    api = builders.api(stack.client)
    api.post("/v1/payments", builders.payment_body(2000))  # the merchant's system accounts exist
    response, seen = _sent(lambda: api.post("/v1/payments", builders.payment_body(2000)))
    assert response.status_code == 201 and response.get_json()["status"] == "succeeded", response.get_json()
    (insert,), (attempt,) = _index(seen, "INSERT INTO operations"), _index(seen, "INSERT INTO attempts")
    assert insert < attempt
    assert not [i for i in _index(seen, "UPDATE operations") if i < attempt]  # no move to processing: born so
    params = seen[insert][1]
    assert params["status"] == "processing" and params["version"] == 1 and params["channel"] == "sandbox"
    assert params["next_query_at"] is not None
    with unit_of_work() as session:  # then settled by the one compare-and-set, as before
        op = session.get(Operation, response.get_json()["id"])
        assert (op.status, op.version, op.channel, op.routing["channel"]) == ("succeeded", 2, "sandbox", "sandbox")


def test_a_transfer_moves_its_balances_last(stack):
    """SQLite: the two accounts' moves, then the stored response. PostgreSQL: the entry and its lines in
    one statement, the stored response, then the two moves in account-id order, all in the COMMIT's
    round trip (``ledger.post(at_commit=True)``, ``db.committed``): the rows stay locked for the commit."""
    api = builders.api(stack.client)
    source, target = api.account(funded=10_000), api.account()
    body = {"from_account": source["id"], "to_account": target["id"], "amount": 10, "currency": "USD"}
    response, seen = _sent(lambda: api.post("/v1/transfers", {**body, "reference": builders.unique("tr")}))
    assert response.status_code == 201, response.get_json()
    first_lock = min(i for i, (statement, _params) in enumerate(seen) if "UPDATE accounts" in statement)
    assert max(_index(seen, "INSERT INTO events")) < first_lock
    kinds = ["accounts" if "UPDATE accounts" in statement else " ".join(statement.split(" ")[:2])
             for statement, _params in seen[first_lock:]]
    if get_engine().dialect.name != "postgresql":
        assert kinds[:3] == ["accounts", "accounts", "UPDATE idempotency_keys"], kinds
        assert all(kind.startswith("RELEASE") for kind in kinds[3:]), kinds
        return
    assert kinds[:2] == ["accounts", "accounts"], kinds
    assert all(kind.startswith("RELEASE") for kind in kinds[2:]), kinds
    moved = [params["account_id"] for statement, params in seen[first_lock:first_lock + 2]]
    assert moved == sorted([source["id"], target["id"]])
    (stored,) = _index(seen, "UPDATE idempotency_keys")
    (entry,) = [i for i, (statement, _params) in enumerate(seen) if statement.startswith("WITH entry AS")]
    assert entry < stored < first_lock
    assert "INSERT INTO ledger_lines" in seen[entry][0] and "UPDATE accounts" not in seen[entry][0]
    assert not _index(seen, "INSERT INTO journal_entries") and not _index(seen, "INSERT INTO ledger_lines")


def test_a_settled_payment_posts_its_entry_lines_and_queued_moves_in_one_statement(stack):
    """PostgreSQL: the journal entry, its lines and the system accounts' queued moves are one statement
    (data-modifying CTEs); SQLite, which has none, writes them one statement each. The ledger is the same."""
    api = builders.api(stack.client)
    api.post("/v1/payments", builders.payment_body(2000))  # the merchant's system accounts exist
    response, seen = _sent(lambda: api.post("/v1/payments", builders.payment_body(2000)))
    assert response.status_code == 201 and response.get_json()["status"] == "succeeded", response.get_json()
    ledger = [statement for statement, _params in seen if "journal_entries" in statement
              or "ledger_lines" in statement or "account_moves" in statement]
    if get_engine().dialect.name == "postgresql":
        assert len(ledger) == 1, ledger
        assert ledger[0].startswith("WITH entry AS (INSERT INTO journal_entries")
        assert "INSERT INTO ledger_lines" in ledger[0] and "INSERT INTO account_moves" in ledger[0]
    else:
        assert [" ".join(statement.split(" ")[:3]) for statement in ledger] == [
            "INSERT INTO journal_entries", "INSERT INTO ledger_lines", "INSERT INTO account_moves"], ledger
    with unit_of_work() as session:  # the entry's lines, each under the request's id, balanced
        lines = session.execute(text(
            "SELECT l.amount, l.request_id FROM ledger_lines l JOIN journal_entries e ON e.id = l.entry_id "
            "WHERE e.source_id = :id"), {"id": response.get_json()["id"]}).all()
    assert len(lines) >= 2 and sum(amount for amount, _request in lines) == 0, lines
    assert {request for _amount, request in lines} == {response.headers["X-Request-Id"]}, lines


def test_a_payment_closes_its_attempt_and_settles_in_one_statement(stack):
    """The channel's answer closes the attempt and settles the operation (the compare-and-set):
    one statement on PostgreSQL (``transition_beside``: two CTEs, the attempt first), two on SQLite;
    the rows are the same either way."""
    api = builders.api(stack.client)
    api.post("/v1/payments", builders.payment_body(2000))
    response, seen = _sent(lambda: api.post("/v1/payments", builders.payment_body(2000)))
    payment = response.get_json()
    assert response.status_code == 201 and payment["status"] == "succeeded", payment
    closes = [statement for statement, _params in seen if "UPDATE attempts" in statement]
    settles = [statement for statement, _params in seen if "UPDATE operations" in statement]
    if get_engine().dialect.name == "postgresql":
        assert len(closes) == 1 and closes == settles, (closes, settles)
        assert closes[0].index("UPDATE attempts") < closes[0].index("UPDATE operations")
    else:
        assert len(closes) == 1 and len(settles) == 1, (closes, settles)
        assert seen.index(next(s for s in seen if s[0] == closes[0])) < seen.index(
            next(s for s in seen if s[0] == settles[0]))
    (attempt,) = payment["attempts"]
    assert attempt == {"channel": "sandbox", "status": "succeeded"}, attempt
    with unit_of_work() as session:
        op = session.get(Operation, payment["id"])
        assert (op.status, op.version) == ("succeeded", 2)
        row = session.execute(text("SELECT status, duration_ms, raw, channel_reference FROM attempts "
                                   "WHERE operation_id = :id"), {"id": op.id}).one()
    assert row.status == "succeeded" and row.duration_ms is not None and row.raw and row.channel_reference, row


def test_the_stored_response_goes_with_the_commit(stack):
    """The stored response, the savepoint's release and the COMMIT are sent together (PostgreSQL's
    pipeline, ``db.committed``: one round trip), so a transfer's two rows stay locked that much less
    after their UPDATEs; SQLite has no pipeline and sends them one by one. Replays answer the stored bytes."""
    api = builders.api(stack.client)
    source, target = api.account(funded=10_000), api.account()
    body = {"from_account": source["id"], "to_account": target["id"], "amount": 10, "currency": "USD",
            "reference": builders.unique("tr")}
    key, me, piped = builders.unique("idem"), threading.get_ident(), []

    def record(conn, _cursor, statement, _parameters, _context, _executemany):
        if threading.get_ident() == me:
            driver = conn.connection.driver_connection
            piped.append((" ".join(statement.split()[:2]), getattr(driver, "_pipeline", None) is not None))

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", record)
    try:
        response = api.post("/v1/transfers", body, key)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert response.status_code == 201, response.get_json()
    tail = piped[[kind for kind, _piped in piped].index("UPDATE idempotency_keys"):]
    postgresql = get_engine().dialect.name == "postgresql"
    moves = ["UPDATE accounts"] * 2 if postgresql else []  # the accounts' moves, sent with the commit
    assert [kind for kind, _piped in tail] == ["UPDATE idempotency_keys", *moves, "RELEASE SAVEPOINT"], piped
    assert all(in_pipeline for _kind, in_pipeline in tail) == postgresql, piped
    if postgresql:  # and the COMMIT (sent by db.committed on the driver's cursor) in the same round trip
        _, wire = traced(get_engine(), lambda: api.post("/v1/transfers", {**body, "reference": builders.unique("tr")}))
        assert wire.messages.count('B CommandComplete "COMMIT"') >= 1 and _lone_syncs(wire.messages) == 0, wire
    replay = api.post("/v1/transfers", body, key)
    assert replay.status_code == 201 and replay.get_json() == response.get_json()
    assert replay.headers.get("Idempotent-Replayed") == "true"


def _lone_syncs(messages: list[str]) -> int:
    """Round trips that carried nothing but a Sync (psycopg ending a pipeline after its own COMMIT's sync)."""
    lone, batch = 0, []
    for message in messages:
        if message.startswith("F "):
            batch.append(message.split()[1])
            continue
        if batch and set(batch) <= {"Sync", "Flush"}:
            lone += 1
        batch = []
    return lone


@pytest.mark.postgres
def test_a_payments_two_commits_each_go_with_the_statements_before_them(stack):
    """PostgreSQL: the commit before the channel call (the attempt, the savepoint's release, COMMIT) and
    the final one (the stored response, COMMIT) are each one round trip with what they commit
    (``db.committed``): no round trip carries a Sync alone."""
    api = builders.api(stack.client)
    api.post("/v1/payments", builders.payment_body(2000))
    response, wire = traced(get_engine(), lambda: api.post("/v1/payments", builders.payment_body(2000)))
    assert response.status_code == 201 and response.get_json()["status"] == "succeeded", response.get_json()
    assert wire.messages.count('B CommandComplete "COMMIT"') >= 2, wire.messages  # (an API-key lookup may add one)
    assert _lone_syncs(wire.messages) == 0, wire.messages
