"""Real processes for tests that need them: the API under gunicorn, over real HTTP."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import venv
from contextlib import contextmanager
from pathlib import Path

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


def stop(proc: subprocess.Popen) -> None:
    """Terminate a process this test started; kill it if it has not gone within 15 s."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
        stop(proc)


ROOT = Path(__file__).resolve().parents[1]
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")


def source_copy(target: Path) -> Path:
    """What `pip install .` reads from a checkout: pyproject.toml, the README and the packages it names."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [name.rstrip("*") for name in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    for name in ("pyproject.toml", project["project"]["readme"]):
        shutil.copy2(ROOT / name, target / name)
    for package in packages:
        shutil.copytree(ROOT / package, target / package, ignore=IGNORED)
    return target


def fresh_venv(home: Path, *requirements: str) -> Path:
    """A new venv at ``home`` holding a normal (non-editable) install of ``requirements`` (paths or
    names, resolved by pip from the package index), with nothing of this test run's environment."""
    venv.create(home, with_pip=False)
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(home / "bin" / "python"), "install",
                           "--quiet", *requirements], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return home
