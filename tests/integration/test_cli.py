"""The payrouter CLI: init is idempotent, merchants and keys, the demo boots."""
import json
import os
import signal
import subprocess
import sys

import requests
from click.testing import CliRunner
from sqlalchemy import inspect

from app.adapters.db import get_engine
from app.entrypoints.cli import main
from tests.live import free_ports, wait_http


def test_init_twice_is_safe(clean):
    runner = CliRunner()
    for _ in range(2):
        result = runner.invoke(main, ["init"])
        assert result.exit_code == 0, result.output
    tables = set(inspect(get_engine()).get_table_names())
    assert {"merchants", "api_keys", "accounts", "ledger_lines", "transfers", "idempotency_keys"} <= tables


def test_merchant_create_prints_the_key_once_and_it_works(client):
    result = CliRunner().invoke(main, ["merchant", "create", "Acme", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["secret_key"].startswith("sk_test_") and out["merchant"].startswith("mer_")
    headers = {"Authorization": f"Bearer {out['secret_key']}"}
    assert client.get("/v1/accounts", headers=headers).status_code == 200
    revoked = CliRunner().invoke(main, ["merchant", "revoke-key", out["key_id"]])
    assert revoked.exit_code == 0
    assert client.get("/v1/accounts", headers=headers).status_code == 401
    assert CliRunner().invoke(main, ["merchant", "revoke-key", "key_nope"]).exit_code != 0


def test_demo_boots_on_a_clean_var_dir_and_is_ready(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "PAYROUTER_VAR_DIR")}
    port, sandbox_port = free_ports(2)
    proc = subprocess.Popen([sys.executable, "-m", "app", "demo", "--port", str(port),
                             "--sandbox-port", str(sandbox_port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", timeout=90, proc=proc)
        ready = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()
        assert ready["checks"] == {"database": "ok", "redis": "ok", "channels": "ok"}
        assert (tmp_path / "var" / "payrouter.db").exists()
        _log_in_as_printed(f"http://127.0.0.1:{port}", _read_until(proc.stdout, b"Ctrl-C stops everything"))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    assert _embedded_redis_servers_in(tmp_path / "var") == []  # the demo stopped the Redis it started


def _read_until(stream, marker: bytes, timeout: float = 30.0) -> str:
    import select
    import time

    out, deadline = b"", time.monotonic() + timeout
    while marker not in out and time.monotonic() < deadline:
        if select.select([stream], [], [], 0.5)[0]:
            chunk = os.read(stream.fileno(), 4096)
            if not chunk:
                break
            out += chunk
    return out.decode()


def _log_in_as_printed(base: str, banner: str) -> None:
    """The demo prints the console's URL and an admin login that works there."""
    import re

    found = re.search(r"console\s+(\S+)\s+user (\S+)\s+password (\S+)", banner)
    assert found, banner
    url, user, password = found.groups()
    assert url == base + "/admin/"
    http = requests.Session()
    page = http.get(base + "/admin/login/", timeout=5).text
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    answer = http.post(base + "/admin/login/", data={"username": user, "password": password, "csrf_token": token},
                       allow_redirects=False, timeout=10)
    assert answer.status_code == 302 and answer.headers["Location"] == "/admin/"
    assert "(admin)" in http.get(base + "/admin/", timeout=10).text


def _embedded_redis_servers_in(var_dir) -> list[int]:
    """Pids of embedded Redis servers still running from ``var_dir`` (Linux /proc)."""
    import pathlib

    found = []
    for proc_dir in pathlib.Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            cmdline = (proc_dir / "cmdline").read_bytes()
            cwd = os.readlink(proc_dir / "cwd")
        except OSError:
            continue
        if b"redis-server" in cmdline and cwd.startswith(str(var_dir)):
            found.append(int(proc_dir.name))
    return found


def test_serve_sizes_itself_from_the_environment_and_the_flags_override_it(clean):
    """PAYROUTER_SERVE_WORKERS / _THREADS size `payrouter serve` (a deployment sets them to its
    cores); `--workers` wins over the variable; a value below 1 is refused naming the variable."""
    import time

    import psutil

    from tests.live import free_port, process_env
    from tests.support import wait_until

    def serves_with(workers: int, *flags, **env) -> None:
        """gunicorn's master forks one child per worker: ``workers`` of them, and no more a moment
        later (a loaded machine may answer /readyz from the first before the last is forked)."""
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--port", str(port), *flags],
                                env=process_env(clean, **env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_http(f"http://127.0.0.1:{port}/readyz", timeout=60, proc=proc)
            master = psutil.Process(proc.pid)
            wait_until(lambda: len(master.children()) >= workers, timeout=30, what=f"{workers} workers")
            time.sleep(1)
            assert len(master.children()) == workers
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    serves_with(3, PAYROUTER_SERVE_WORKERS=3, PAYROUTER_SERVE_THREADS=2)
    serves_with(1, "--workers", "1", PAYROUTER_SERVE_WORKERS=3)
    refused = subprocess.run([sys.executable, "-m", "app", "serve", "--port", str(free_port())],
                             env=process_env(clean, PAYROUTER_SERVE_WORKERS=0), capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode == 1
    assert "PAYROUTER_SERVE_WORKERS='0' cannot be used" in refused.stderr and "Traceback" not in refused.stderr
