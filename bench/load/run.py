"""A realistic load at a fixed arrival rate, then the books checked.

Starts the whole stack on this machine — `payrouter serve` (gunicorn 2 workers × 8 threads), one
`payrouter worker` for all queues, the sandbox PSP pinned to its own core, a webhook receiver —
drives it with locust (bench/load/locustfile.py) at USERS × RATE requests per second for the given
time, then waits for every operation to be final and every webhook delivered, and checks:

- locust saw no failure (every answer the one its request should get);
- the ledger is balanced (lines sum to zero per currency and per entry; balances equal their lines);
- no callback lost: callbacks arrived (…52, …53, …56 send them), each one applied, ignored or a
  duplicate, and nothing is left processing;
- no webhook lost: every event for the endpoint delivered, and the receiver got each event.

Prints p50/p99 per endpoint (locust's stats) and the checks, as markdown.

    DATABASE_URL=postgresql://postgres@127.0.0.1/payrouter_load REDIS_URL=redis://127.0.0.1:6379/11 \
        .venv/bin/python bench/load/run.py [--users 20] [--rate 1.5] [--minutes 10]

The database should be fresh (the checks cover every row in it).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from common import bench_env, start, stop  # noqa: E402

from app.config import Config, set_config  # noqa: E402
from tests.live import free_port  # noqa: E402

OTHER_CPUS = os.environ.get("BENCH_OTHER_CPUS", "1")


class WebhookReceiver:
    """Counts the webhook deliveries it gets, by event id (answers 200)."""

    def __init__(self) -> None:
        self.events: dict[str, int] = {}
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                event_id = json.loads(body).get("id", "?")
                with lock:
                    receiver.events[event_id] = receiver.events.get(event_id, 0) + 1
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def setup(accounts: int) -> tuple[str, list[str]]:
    from app.adapters.db import unit_of_work
    from app.services import accounts as accounts_service
    from app.services.merchants import create_merchant

    with unit_of_work() as session:
        merchant, issued = create_merchant(session, "load-test")
        ids = [accounts_service.create_account(session, merchant, {"currency": "USD", "customer": {"id": f"c{i}"}}).id
               for i in range(accounts)]
        session.flush()
        for acct_id in ids:
            accounts_service.fund_for_testing(session, merchant, acct_id, 10**11)
    return issued.secret, ids


def settled(deadline_s: float, endpoint_id: str, receiver: WebhookReceiver) -> dict:
    """Wait until nothing is processing, every callback is handled and every event delivered; return the counts."""
    from sqlalchemy import func, select

    from app.adapters.db import read_only
    from app.adapters.models import ChannelCallback, Event, Operation
    from app.adapters.webhook_models import SUCCEEDED, WebhookDelivery

    deadline = time.monotonic() + deadline_s
    while True:
        with read_only() as session:
            counts = {
                "operations": session.scalar(select(func.count()).select_from(Operation)),
                "processing": session.scalar(select(func.count()).select_from(Operation)
                                             .where(Operation.status.in_(("pending", "processing")))),
                "callbacks": session.scalar(select(func.count()).select_from(ChannelCallback)),
                "callbacks unhandled": session.scalar(select(func.count()).select_from(ChannelCallback)
                                                      .where(ChannelCallback.outcome.is_(None))),
                "events": session.scalar(select(func.count()).select_from(Event)),
                "deliveries": session.scalar(select(func.count()).select_from(WebhookDelivery)
                                             .where(WebhookDelivery.endpoint_id == endpoint_id)),
                "deliveries not succeeded": session.scalar(
                    select(func.count()).select_from(WebhookDelivery)
                    .where(WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.status != SUCCEEDED)),
            }
        counts["events received"] = len(receiver.events)
        done = (counts["processing"] == 0 and counts["callbacks unhandled"] == 0
                and counts["deliveries not succeeded"] == 0 and counts["events received"] >= counts["deliveries"])
        if done or time.monotonic() > deadline:
            counts["settled"] = done
            return counts
        time.sleep(1)


def ledger_problems() -> list[str]:
    """The ledger invariant (as the tests check it); an empty list when it holds."""
    from sqlalchemy import func, select

    from app.adapters.db import read_only
    from app.adapters.models import Account, AccountMove, LedgerLine
    from app.services import ledger

    while ledger.apply_queued_moves():
        pass
    problems = []
    with read_only() as session:
        if session.scalar(select(func.count()).select_from(AccountMove)):
            problems.append("queued account moves left")
        for currency, total in session.execute(select(LedgerLine.currency, func.sum(LedgerLine.amount))
                                               .group_by(LedgerLine.currency)):
            if total != 0:
                problems.append(f"{currency} lines sum to {total}")
        unbalanced = session.execute(select(LedgerLine.entry_id).group_by(LedgerLine.entry_id, LedgerLine.currency)
                                     .having(func.sum(LedgerLine.amount) != 0)).all()
        if unbalanced:
            problems.append(f"{len(unbalanced)} unbalanced entries")
        sums = {(a, t): s for a, t, s in session.execute(
            select(LedgerLine.account_id, LedgerLine.balance_type, func.sum(LedgerLine.amount))
            .group_by(LedgerLine.account_id, LedgerLine.balance_type))}
        for account in session.scalars(select(Account)):
            if (account.available, account.pending) != (sums.get((account.id, "available"), 0),
                                                        sums.get((account.id, "pending"), 0)):
                problems.append(f"{account.id} balance differs from its lines")
    return problems


def stats_table(csv_path: Path) -> tuple[str, int, int]:
    lines = ["| endpoint | requests | failures | p50 ms | p99 ms |", "| --- | --- | --- | --- | --- |"]
    total = failures = 0
    with csv_path.open() as f:
        for row in csv.DictReader(f):
            if row["Name"] == "Aggregated":
                total, failures = int(row["Request Count"]), int(row["Failure Count"])
            lines.append(f"| {row['Type']} {row['Name']} | {row['Request Count']} | {row['Failure Count']} | "
                         f"{row['50%']} | {row['99%']} |")
    return "\n".join(lines), total, failures


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--rate", type=float, default=1.5, help="requests per second per user")
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--accounts", type=int, default=50)
    args = parser.parse_args()
    sandbox_port = free_port()
    os.environ["PAYROUTER_SANDBOX_URL"] = f"http://127.0.0.1:{sandbox_port}"
    os.environ["PAYROUTER_ALLOW_PRIVATE_WEBHOOKS"] = "1"  # the receiver is on loopback
    config = Config.from_env()
    if not config.database_url.startswith("postgresql") or not config.redis_url:
        print("set DATABASE_URL (a fresh PostgreSQL database) and REDIS_URL", file=sys.stderr)
        return 2
    set_config(config)
    from app.entrypoints import bootstrap

    bootstrap.init()
    secret, accounts = setup(args.accounts)
    api_port = free_port()
    os.environ["PAYROUTER_PUBLIC_URL"] = f"http://127.0.0.1:{api_port}"  # where the sandbox posts its callbacks
    env = bench_env()
    receiver = WebhookReceiver()
    procs = []
    out = Path(tempfile.mkdtemp(prefix="payrouter-load-"))
    try:
        procs.append(start(["taskset", "-c", OTHER_CPUS, sys.executable, "-m", "app", "sandbox", "--port", "{port}"],
                           env, "/healthz", port=sandbox_port)[0])
        api, base = start([sys.executable, "-m", "app", "serve", "--port", "{port}", "--workers", "2",
                           "--threads", "8"], env, "/readyz", port=api_port)
        procs.append(api)
        procs.append(subprocess.Popen([sys.executable, "-m", "app", "worker"], env=env, cwd=ROOT,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        made = requests.post(f"{base}/v1/webhook_endpoints", json={"url": receiver.url, "enabled_events": ["*"]},
                             headers={"Authorization": f"Bearer {secret}", "Idempotency-Key": uuid.uuid4().hex},
                             timeout=10)
        made.raise_for_status()
        endpoint_id = made.json()["id"]
        locust_env = {**env, "LOAD_SECRET": secret, "LOAD_ACCOUNTS": ",".join(accounts),
                      "LOAD_RATE_PER_USER": str(args.rate)}
        started = time.monotonic()
        subprocess.run(["taskset", "-c", OTHER_CPUS, sys.executable, "-m", "locust", "-f",
                        str(HERE / "locustfile.py"), "--headless", "-u", str(args.users), "-r", str(args.users),
                        "--run-time", f"{int(args.minutes * 60)}s", "--host", base, "--csv", str(out / "load"),
                        "--only-summary", "--loglevel", "WARNING"], env=locust_env, check=False)
        ran = time.monotonic() - started
        counts = settled(180, endpoint_id, receiver)
        problems = ledger_problems()
    finally:
        for proc in procs:
            stop(proc)
        receiver.close()
    table, total, failures = stats_table(out / "load_stats.csv")
    print(f"\n{args.users} users × {args.rate} req/s each (fixed arrival rate {args.users * args.rate:.0f} req/s) "
          f"for {ran / 60:.1f} min: {total} requests, {failures} failures ({failures / max(total, 1):.3%})\n")
    print(table)
    print("\nafter the load:", ", ".join(f"{k} {v}" for k, v in counts.items()))
    duplicates = sum(1 for n in receiver.events.values() if n > 1)
    print(f"webhook events received more than once (at-least-once delivery, deduplicated by id): {duplicates}")
    print("ledger:", "balanced" if not problems else "; ".join(problems[:10]))
    ok = failures == 0 and counts["settled"] and counts["callbacks"] > 0 and not problems
    print("RESULT:", "pass" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
