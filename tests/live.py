"""Real processes for tests that need them: the API under gunicorn, over real HTTP."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

import requests

from app.adapters.redis_conn import redis_url
from app.config import Config


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (all held open until every one is chosen)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


def process_env(config: Config, **extra) -> dict:
    env = dict(os.environ)
    env.update({"DATABASE_URL": config.database_url, "REDIS_URL": redis_url(config),
                "PAYROUTER_VAR_DIR": str(config.var_dir), "PAYROUTER_LOG_FORMAT": "text"})
    env.update({k: str(v) for k, v in extra.items()})
    return env


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer 200 within {timeout}s")


@contextmanager
def api_server(config: Config, workers: int = 2, threads: int = 16, **env):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port), "--workers", str(workers),
         "--threads", str(threads)],
        env=process_env(config, **env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/readyz", proc=proc)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
