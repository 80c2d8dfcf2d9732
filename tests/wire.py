"""What a block of work exchanges with PostgreSQL, read from libpq's own trace (``PQtrace``) of every
connection the block checks out of the engine's pool: the round trips (each time the client sent
messages and then read the server's answer to them) and the messages. Used by tests that pin round
trips and by bench/statements.py. PostgreSQL only (SQLite has no wire)."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass

from sqlalchemy import event


@dataclass(frozen=True)
class Wire:
    round_trips: int
    messages: list[str]  # one line each, "F <message> ..." (to the server) or "B <message> ..." (from it)

    def sent(self, prefix: str) -> list[str]:
        """The messages sent to the server that start with ``prefix`` (``Query``, ``Parse``, ``Sync``…)."""
        return [m for m in self.messages if m.startswith("F " + prefix)]


def traced(engine, send) -> tuple[object, Wire]:
    """``send()``'s answer and what it exchanged with the server over the connections it checked out
    of ``engine`` (connections checked out before are not traced)."""
    from psycopg import pq

    files = []

    def checkout(dbapi_conn, _record, _proxy):
        file = tempfile.TemporaryFile(mode="w+")
        files.append(file)
        dbapi_conn.pgconn.trace(file.fileno())
        dbapi_conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)

    def checkin(dbapi_conn, _record):
        if dbapi_conn is not None:
            dbapi_conn.pgconn.untrace()

    event.listen(engine, "checkout", checkout)
    event.listen(engine, "checkin", checkin)
    try:
        answer = send()
    finally:
        event.remove(engine, "checkout", checkout)
        event.remove(engine, "checkin", checkin)
    round_trips, messages = 0, []
    for file in files:
        file.seek(0)
        previous = None
        for line in file:
            direction, _length, message, *rest = line.rstrip("\n").split("\t") + ["", ""]
            if direction not in ("F", "B"):
                continue  # the continuation of a multi-line statement's text
            if direction == "B" and previous == "F":
                round_trips += 1
            previous = direction
            messages.append(f"{direction} {message} {rest[0].strip()}".strip())
        file.close()
    return answer, Wire(round_trips, messages)
