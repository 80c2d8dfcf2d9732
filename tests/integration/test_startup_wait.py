"""`payrouter serve` and `payrouter worker` at start with the database unreachable: they wait for it
(PAYROUTER_STARTUP_DATABASE_WAIT, trying every second, each try said on stderr), go on once it
answers, and otherwise exit 1 with one line naming the database, never a traceback."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy.engine import make_url

from tests.live import free_port, process_env


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


class _LateForwarder:
    """A TCP port in front of ``target`` (the suite's PostgreSQL) that hangs up on the first
    ``refused`` connections, then forwards each one: a database that comes up while a process
    waits for it (counted in tries, not seconds, so a slow start of the process changes nothing)."""

    def __init__(self, target: tuple[str, int], refused: int):
        self.target, self.refused, self.stopped = target, refused, threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                client = self.listener.accept()[0]
            except OSError:
                continue
            if self.refused > 0:
                self.refused -= 1
                client.close()
                continue
            server = socket.create_connection(self.target)
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.listener.close()


@pytest.mark.postgres
def test_a_worker_waits_for_a_database_that_comes_up_and_then_starts(config):
    real = make_url(config.database_url)
    forwarder = _LateForwarder((real.host or "127.0.0.1", real.port or 5432), refused=2)
    try:
        late = real.set(port=forwarder.port).render_as_string(hide_password=False)
        env = process_env(config, DATABASE_URL=late, PAYROUTER_STARTUP_DATABASE_WAIT=30)
        done = subprocess.run([sys.executable, "-m", "app", "worker", "--burst"], env=env, capture_output=True,
                              text=True, timeout=120)
    finally:
        forwarder.close()
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("is unreachable") == 2 and forwarder.refused == 0, done.stderr  # it waited...
    assert "Traceback" not in done.stderr  # ...and then started and ran its (empty) queues
