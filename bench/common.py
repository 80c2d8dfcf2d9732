"""Shared load-generation helpers for the HTTP benchmarks (bounded, loopback only)."""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.live import free_port, stop, wait_http  # noqa: E402, F401 - stop: the benches import it from here

SERVER = {"workers": 2, "threads": 8}


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


@dataclass(frozen=True)
class StatementCount:
    """What one request runs in the database. ``executed``: statements the server executes (an
    executemany of n parameter sets is n statements; PostgreSQL's pg_stat_statements counts the
    same); ``calls``: driver calls (execute or executemany), how sessions 1-3 counted."""

    executed: int
    calls: int


def count_statements(engine, send: Callable[[], object]) -> StatementCount:
    """Count what ``send()`` runs on ``engine``."""
    from sqlalchemy import event

    counts = {"executed": 0, "calls": 0}

    def count(_conn, _cursor, _statement, parameters, _context, executemany):
        counts["calls"] += 1
        counts["executed"] += len(parameters) if executemany else 1

    event.listen(engine, "before_cursor_execute", count)
    try:
        send()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return StatementCount(**counts)


def start_baselines(env: dict, count: StatementCount, servers: dict[str, tuple[subprocess.Popen, str]]) -> None:
    """Into ``servers`` (the caller stops them, whatever fails): the baseline matched to the
    statements executed and, where it differs, a second one matched to the driver calls (the
    earlier count), so both ratios come from the same run."""
    servers["baseline"] = baseline_server(env, count.executed)
    if count.calls != count.executed:
        servers[f"baseline at {count.calls} (driver calls)"] = baseline_server(env, count.calls)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def load(make_request, clients: int, per_client: int) -> Result:
    """``clients`` threads each sending ``per_client`` requests; make_request(session, i, j) -> status."""
    latencies: list[float] = []
    errors = 0

    def run(i):
        nonlocal errors
        session = requests.Session()
        mine = []
        for j in range(per_client):
            t0 = time.perf_counter()
            status = make_request(session, i, j)
            mine.append(time.perf_counter() - t0)
            if status >= 300:
                errors += 1
        return mine

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for mine in pool.map(run, range(clients)):
            latencies.extend(mine)
    elapsed = time.perf_counter() - started
    return Result(len(latencies) / elapsed, percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000,
                  errors)


def start(args: list[str], env: dict, ready_path: str, port: int | None = None) -> tuple[subprocess.Popen, str]:
    port = port or free_port()
    cmd = [a.replace("{port}", str(port)) for a in args]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    wait_http(base + ready_path, timeout=60, proc=proc)
    return proc, base


def baseline_server(env: dict, statements: int) -> tuple[subprocess.Popen, str]:
    env = {**env, "BASELINE_STATEMENTS": str(statements), "PYTHONPATH": str(ROOT)}
    return start([sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", str(SERVER["workers"]),
                  "--threads", str(SERVER["threads"]), "-b", "127.0.0.1:{port}", "--chdir", str(ROOT / "bench"),
                  "baseline_app:app"], env, "/healthz")


def median(values):
    return statistics.median(values)


# One merchant key carries the whole load: a limit it never reaches, so the limiter still runs (and
# costs what it costs) without refusing (the default 100/s would answer most requests 429). The servers
# a bench starts get it in their environment; an app a bench serves in its own process, in its config.
BENCH_RATE_LIMIT = "1000000"


def bench_env() -> dict:
    from app.config import get_config

    env = dict(os.environ)
    env.setdefault("PAYROUTER_LOG_FORMAT", "text")
    # The servers run from the repository's root, the bench from wherever it was started: one var dir
    # for all, or each would make its own secret key and could not read the others' stored secrets.
    env.setdefault("PAYROUTER_VAR_DIR", str(get_config().var_dir))
    env.setdefault("PAYROUTER_RATE_LIMIT", BENCH_RATE_LIMIT)
    return env


@dataclass
class PostgresBench:
    config: object  # app.config.Config
    database: str  # the database's name (its backends' CPU is counted by that name)
    sandbox_port: int  # PAYROUTER_SANDBOX_URL points there; the bench starts the sandbox on it
    env: dict  # the servers' environment (bench_env)


def postgres_bench() -> PostgresBench | None:
    """What a bench against the machine's PostgreSQL and Redis starts from: a port for the sandbox
    PSP (PAYROUTER_SANDBOX_URL), this process's configuration installed, the database initialised
    (``payrouter init``), the servers' environment. None, said on stderr, without DATABASE_URL
    (PostgreSQL) and REDIS_URL."""
    from app.config import Config, set_config
    from app.entrypoints import bootstrap

    sandbox_port = free_port()
    os.environ["PAYROUTER_SANDBOX_URL"] = f"http://127.0.0.1:{sandbox_port}"
    os.environ.setdefault("PAYROUTER_RATE_LIMIT", BENCH_RATE_LIMIT)
    config = Config.from_env()
    if not config.database_url.startswith("postgresql") or not config.redis_url:
        print("set DATABASE_URL (PostgreSQL) and REDIS_URL", file=sys.stderr)
        return None
    set_config(config)  # a script is its own entry point: the process's configuration
    bootstrap.init()
    return PostgresBench(config, config.database_url.rsplit("/", 1)[-1].split("?")[0], sandbox_port, bench_env())


def setup_merchant(accounts_needed: int) -> tuple[str, list[str]]:
    """A new merchant's secret key and ``accounts_needed`` USD customer accounts, each funded."""
    from app.adapters.db import unit_of_work
    from app.services import accounts
    from app.services.merchants import create_merchant

    with unit_of_work() as session:
        merchant, issued = create_merchant(session, f"bench-fixed-{uuid.uuid4().hex[:6]}")
        ids = [accounts.create_account(session, merchant, {"currency": "USD", "customer": {"id": "c"}}).id
               for _ in range(accounts_needed)]
        session.flush()
        for acct_id in ids:
            accounts.fund_for_testing(session, merchant, acct_id, 10**12)
    return issued.secret, ids


def report(what: str, count: StatementCount, clients: int, requests_: int, rounds: int,
           rows: dict[str, list[Result]], ours: str) -> None:
    """The markdown table of an HTTP benchmark and the ratio of ``ours`` to each baseline (req/s medians)."""
    print(f"statements per {what}: {count.executed} executed ({count.calls} driver calls); {clients} clients × "
          f"{requests_} requests × {rounds} rounds; gunicorn gthread {SERVER['workers']} workers × "
          f"{SERVER['threads']} threads\n")
    print("| server | req/s (median) | p50 ms | p99 ms | errors |")
    print("| --- | --- | --- | --- | --- |")
    for name, results in rows.items():
        print(f"| {name} | {median([r.rps for r in results]):.0f} | {median([r.p50_ms for r in results]):.1f} | "
              f"{median([r.p99_ms for r in results]):.1f} | {sum(r.errors for r in results)} |")
    print()
    for name in rows:
        if name.startswith("baseline"):
            ratio = median([r.rps for r in rows[ours]]) / median([r.rps for r in rows[name]])
            print(f"ratio {ours} / {name} (req/s medians): {ratio:.2f}")
