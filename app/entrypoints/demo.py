"""``payrouter demo``: the whole product on the embedded defaults, seeded, on one command."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

from app.config import Config, set_config


def _wait_ready(url: str, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


def seed() -> dict:
    """A demo merchant with a fresh key and two funded accounts."""
    from app.adapters.db import unit_of_work
    from app.services import accounts
    from app.services.merchants import create_merchant

    with unit_of_work() as session:
        merchant, issued = create_merchant(session, "Demo Shop", "retail")
        alice = accounts.create_account(session, merchant, {"currency": "USD", "customer": {"id": "alice"}})
        bob = accounts.create_account(session, merchant, {"currency": "USD", "customer": {"id": "bob"}})
        accounts.fund_for_testing(session, merchant, alice.id, 50_000)
    return {"merchant": merchant.id, "secret_key": issued.secret, "accounts": [alice.id, bob.id],
            "console": demo_admin()}


def demo_admin() -> dict:
    """A console user with the admin role and a random password (printed by the demo, stored hashed)."""
    import secrets

    from app.services import admin_users

    username, password = f"demo-admin-{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    admin_users.create_user(username, password, "admin", actor="demo")
    return {"username": username, "password": password}


def run_demo(port: int = 8000, sandbox_port: int = 8090) -> None:
    os.environ.setdefault("PAYROUTER_ALLOW_PRIVATE_WEBHOOKS", "1")
    os.environ.setdefault("PAYROUTER_PUBLIC_URL", f"http://127.0.0.1:{port}")
    os.environ.setdefault("PAYROUTER_SANDBOX_URL", f"http://127.0.0.1:{sandbox_port}")
    config = Config.from_env()
    set_config(config)
    from app.adapters import redis_conn
    from app.entrypoints import bootstrap

    if config.embedded_redis:
        server = redis_conn.embedded_server(config)  # this process owns the embedded Redis
        os.environ["REDIS_URL"] = f"unix://{server.socket_file}"
        config = Config.from_env()
        set_config(config)
    bootstrap.init()
    seeded = seed()
    children = [
        subprocess.Popen([sys.executable, "-m", "app", "sandbox", "--port", str(sandbox_port)]),
        subprocess.Popen([sys.executable, "-m", "app", "worker"]),
        subprocess.Popen([sys.executable, "-m", "app", "serve", "--port", str(port)]),
    ]

    def stop(*_):
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
        redis_conn.stop_embedded()  # it started the embedded Redis, so it stops it
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    base = f"http://127.0.0.1:{port}"
    if not _wait_ready(base + "/readyz"):
        print("the API did not become ready; see the logs above", file=sys.stderr)
        stop()
    key, (alice, bob) = seeded["secret_key"], seeded["accounts"]
    print(f"""
PayRouter demo is up.
  API        {base}   (readiness: {base}/readyz, OpenAPI: {base}/openapi.json)
  sandbox    http://127.0.0.1:{sandbox_port}
  merchant   {seeded['merchant']}
  secret key {key}
  accounts   {alice} (alice, 500.00 USD)   {bob} (bob, empty)
  console    {base}/admin/   user {seeded['console']['username']}   password {seeded['console']['password']}

Try:
  curl -s {base}/v1/transfers -H 'Authorization: Bearer {key}' -H 'Idempotency-Key: demo-1' \\
       -H 'Content-Type: application/json' \\
       -d '{json.dumps({"from_account": alice, "to_account": bob, "amount": 1250, "currency": "USD",
                        "reference": "demo-transfer-1"})}'
  curl -s {base}/v1/accounts/{bob} -H 'Authorization: Bearer {key}'

Ctrl-C stops everything.
""", flush=True)
    while all(child.poll() is None for child in children):
        time.sleep(0.5)
    print("a demo process exited; stopping", file=sys.stderr)
    stop()
