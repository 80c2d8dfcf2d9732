"""`payrouter serve` and `payrouter worker` at start with the database unreachable: they wait for it
(PAYROUTER_STARTUP_DATABASE_WAIT, trying every second, each try said on stderr), go on once it
answers, and otherwise exit 1 with one line naming the database, never a traceback."""
from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
from sqlalchemy.engine import make_url

from tests.live import free_port, process_env
from tests.tcp_proxy import TcpProxy


def _closed_port_url() -> str:
    return f"postgresql://postgres@127.0.0.1:{free_port()}/payrouter_nowhere"


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["worker", "--burst"]])
def test_an_unreachable_database_ends_the_start_with_one_line_after_the_wait(config, command, tmp_path):
    env = process_env(config, DATABASE_URL=_closed_port_url(), PAYROUTER_STARTUP_DATABASE_WAIT=2,
                      PAYROUTER_VAR_DIR=tmp_path)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "app", *command], env=env, capture_output=True, text=True,
                          timeout=60)
    took = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "trying again in 1 s" in done.stderr  # each failed try is said while it waits
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: the database postgresql+psycopg://postgres@127.0.0.1:") and \
        "/payrouter_nowhere is unreachable after 2 s: " in last, done.stderr
    assert 1.5 < took < 30  # it waited, and not much longer than asked


@pytest.mark.postgres
def test_a_worker_waits_for_a_database_that_comes_up_and_then_starts(config):
    real = make_url(config.database_url)
    # A database that comes up while the worker waits: the first two connections are hung up on (counted
    # in tries, not seconds, so a slow start of the process changes nothing), the next ones forwarded.
    forwarder = TcpProxy(lambda: socket.create_connection((real.host or "127.0.0.1", real.port or 5432)), refuse=2)
    try:
        late = real.set(port=forwarder.port).render_as_string(hide_password=False)
        env = process_env(config, DATABASE_URL=late, PAYROUTER_STARTUP_DATABASE_WAIT=30)
        done = subprocess.run([sys.executable, "-m", "app", "worker", "--burst"], env=env, capture_output=True,
                              text=True, timeout=120)
    finally:
        forwarder.close()
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("is unreachable") == 2 and forwarder.refuse == 0, done.stderr  # it waited...
    assert "Traceback" not in done.stderr  # ...and then started and ran its (empty) queues
