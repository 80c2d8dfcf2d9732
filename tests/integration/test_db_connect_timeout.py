"""A PostgreSQL host that takes the connection and never answers (a hung server, or a proxy in
front of a dead one) costs a request at most the 5 s connect timeout, then the database error
that the API answers with 503 — not the kernel's minutes-long TCP timeout."""
from __future__ import annotations

import socket
import threading
import time

import pytest
from sqlalchemy.exc import OperationalError

from app.adapters import db


def test_a_silent_database_host_fails_the_connection_within_the_connect_timeout():
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept_and_say_nothing():
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(silent.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept_and_say_nothing, daemon=True)
    thread.start()
    engine = db._make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{silent.getsockname()[1]}/x")
    try:
        started = time.monotonic()
        with pytest.raises(OperationalError):
            engine.connect().close()
        assert time.monotonic() - started < 8  # the 5 s connect timeout, with room for a busy machine
    finally:
        engine.dispose()
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        silent.close()
