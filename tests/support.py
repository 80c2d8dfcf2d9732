"""Waiting in tests: poll for the condition itself, never sleep for a guessed time."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02,
               what: str = "the condition") -> T:
    """Call ``condition`` until it returns something true, and return that; AssertionError once
    ``timeout`` seconds have passed. It is always asked once more at or after the deadline, so a
    condition met by then counts however slowly the machine ran."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(interval)


def answers(call: Callable[[], object], errors: tuple[type[BaseException], ...] = (Exception,)) -> bool:
    """``call()`` returned without raising one of ``errors`` (for wait_until: a server that answers)."""
    try:
        call()
    except errors:
        return False
    return True


def database_text() -> str:
    """Every value of every row of every table, as text (bytes decoded): what a secret (a card token,
    a merchant's channel credentials) must not be in."""
    from sqlalchemy import inspect, text

    from app.adapters.db import unit_of_work

    parts = []
    with unit_of_work() as session:
        connection = session.connection()
        for table in inspect(connection).get_table_names():
            for row in connection.execute(text(f'SELECT * FROM "{table}"')):
                for value in row:
                    if isinstance(value, memoryview):
                        value = value.tobytes()
                    parts.append(value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value))
    return "\n".join(parts)
