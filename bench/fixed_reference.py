"""PayRouter against a fixed reference, driven by wrk, with CPU per request per process.

The reference (bench/reference_app.py) is bare Flask + SQLAlchemy Core + psycopg: parse the JSON
body, one transaction of 8 INSERTs. Both run under gunicorn gthread with the same workers and
threads, pinned to the same cores (API_CPUS); the sandbox PSP (another company's server) and wrk
are pinned to other cores (OTHER_CPUS); PostgreSQL and Redis are the machine's servers, unpinned
(PostgreSQL's CPU is that of the backends serving the bench's database; Redis's, the whole server's).
Rounds alternate reference / PayRouter scenario; medians and ratios are printed, and the CPU
seconds each process group spent per completed request (psutil, before/after each run).

    DATABASE_URL=postgresql://postgres@127.0.0.1/payrouter_bench REDIS_URL=redis://127.0.0.1:6379/9 \
        .venv/bin/python bench/fixed_reference.py [--duration 20] [--rounds 3] [--connections 16]

Scenarios: payments (sandbox answers at once), transfers on one hot pair of accounts, transfers
spread over 16 pairs; and, asked for by name (``--scenarios payments,payment-shaped``), a second,
payment-shaped reference (bench/payment_reference_app.py: a payment's rows and PSP call on the bare
stack, none of PayRouter's code), which says how much of the payments' gap is the work itself.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import uuid
from dataclasses import dataclass, field

import psutil
from common import ROOT, SERVER, postgres_bench, setup_merchant, start, stop

from app.config import normalize_database_url

API_CPUS = os.environ.get("BENCH_API_CPUS", "0")
OTHER_CPUS = os.environ.get("BENCH_OTHER_CPUS", "1")
PAYMENT_BODY = json.dumps({"amount": 2000, "currency": "USD", "reference": "%s",
                           "payment_method": {"type": "card", "brand": "visa", "country": "US", "last4": "4242"},
                           "customer": {"id": "bench", "country": "US"}})


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    bad: int  # answers other than 201, and socket errors
    cpu_ms: dict[str, float] = field(default_factory=dict)  # process group -> CPU ms per completed request


def pinned(cpus: str, args: list[str]) -> list[str]:
    return ["taskset", "-c", cpus, *args]


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its live children."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def named_cpu(name: str) -> float:
    """CPU seconds of the processes called ``name``; "postgres:<db>" counts only the backends
    serving database <db> (their title names it), not the other databases' nor the cluster's own."""
    name, _, database = name.partition(":")
    total = 0.0
    for proc in psutil.process_iter(["name", "cmdline", "cpu_times"]):
        if not (proc.info["name"] or "").startswith(name) or not proc.info["cpu_times"]:
            continue
        if database and f" {database} " not in " ".join(proc.info["cmdline"] or ()) + " ":
            continue
        total += proc.info["cpu_times"].user + proc.info["cpu_times"].system
    return total


def cpu_snapshot(groups: dict[str, int | str]) -> dict[str, float]:
    return {name: tree_cpu(ref) if isinstance(ref, int) else named_cpu(ref) for name, ref in groups.items()}


def wrk(url: str, path: str, body: str, auth: str, duration: int, connections: int, run_id: str) -> dict:
    env = {**os.environ, "WRK_BODY": body, "WRK_PATH": path, "WRK_AUTH": auth, "WRK_RUN": run_id}
    out = subprocess.run(pinned(OTHER_CPUS, ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--timeout", "30s",
                                             "-s", str(ROOT / "bench" / "wrk_post.lua"), url]),
                         env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}")
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("WRK_RESULT "))
    return json.loads(line[len("WRK_RESULT "):])


def measure(base: str, path: str, body: str, auth: str, args, groups: dict[str, int | str], name: str) -> Run:
    before = cpu_snapshot(groups)
    result = wrk(base, path, body, auth, args.duration, args.connections, uuid.uuid4().hex[:12])
    after = cpu_snapshot(groups)
    done = result["requests"]
    created = sum(s["n"] for s in result["statuses"] if s["status"] == 201)
    bad = done - created + result["errors_connect"] + result["errors_read"] + result["errors_write"] + \
        result["errors_timeout"]
    seconds = result["duration_us"] / 1e6
    return Run(rps=created / seconds, p50_ms=result["p50_us"] / 1000, p99_ms=result["p99_us"] / 1000, bad=bad,
               cpu_ms={g: (after[g] - before[g]) * 1000 / max(created, 1) for g in groups})


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=20, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--scenarios", default="payments,transfers-hot,transfers-spread")
    args = parser.parse_args()
    bench = postgres_bench()
    if bench is None:
        return 2
    config, database, sandbox_port, env = bench.config, bench.database, bench.sandbox_port, bench.env
    secret, ids = setup_merchant(32)
    scenarios = args.scenarios.split(",")
    workers, threads = str(SERVER["workers"]), str(SERVER["threads"])
    servers: dict[str, tuple[subprocess.Popen, str]] = {}
    try:
        servers["sandbox"] = start(pinned(OTHER_CPUS, [sys.executable, "-m", "app", "sandbox", "--port", "{port}"]),
                                   env, "/healthz", port=sandbox_port)
        servers["payrouter"] = start(pinned(API_CPUS, [sys.executable, "-m", "app", "serve", "--port", "{port}",
                                                       "--workers", workers, "--threads", threads]), env, "/readyz")
        ref_env = {**env, "REFERENCE_DATABASE_URL": normalize_database_url(config.database_url)}
        servers["reference"] = start(pinned(API_CPUS, [sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", workers,
                                                       "--threads", threads, "-b", "127.0.0.1:{port}", "--chdir",
                                                       str(ROOT / "bench"), "reference_app:app"]),
                                     ref_env, "/healthz")
        loads = {"reference (8 INSERTs)": (servers["reference"][1], "/ref", json.dumps({"amount": 2000, "k": "%s"}),
                                           "", {"API": servers["reference"][0].pid})}
        if "payment-shaped" in scenarios:  # a payment's rows and PSP call on the bare stack (payment_reference_app)
            from app.adapters.channel_secrets import StoredChannelSecrets

            shaped_env = {**ref_env, "SANDBOX_URL": f"http://127.0.0.1:{sandbox_port}", "SANDBOX_CHANNEL": "sandbox",
                          "SANDBOX_SECRET": StoredChannelSecrets(config).named("sandbox")}
            servers["payment-shaped"] = start(pinned(API_CPUS, [
                sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", workers, "--threads", threads,
                "-b", "127.0.0.1:{port}", "--chdir", str(ROOT / "bench"), "payment_reference_app:app"]),
                shaped_env, "/healthz")
            loads["payment-shaped reference (bare stack)"] = (
                servers["payment-shaped"][1], "/payment", PAYMENT_BODY, "",
                {"API": servers["payment-shaped"][0].pid, "sandbox": servers["sandbox"][0].pid})
        pr_groups = {"API": servers["payrouter"][0].pid, "sandbox": servers["sandbox"][0].pid}
        base = servers["payrouter"][1]
        if "payments" in scenarios:
            loads["payments"] = (base, "/v1/payments", PAYMENT_BODY, secret, pr_groups)
        def transfer(a: str, b: str) -> str:
            return json.dumps({"from_account": a, "to_account": b, "amount": 1, "currency": "USD",
                               "reference": "%s"})

        if "transfers-hot" in scenarios:
            loads["transfers, one hot pair"] = (base, "/v1/transfers", transfer(ids[0], ids[1]), secret, pr_groups)
        if "transfers-spread" in scenarios:  # requests take the 16 pairs in turn
            spread = "\x1e".join(transfer(ids[2 * i], ids[2 * i + 1]) for i in range(16))
            loads["transfers, 16 pairs"] = (base, "/v1/transfers", spread, secret, pr_groups)
        for _url, _path, _body, _auth, groups in loads.values():
            groups.update({"PostgreSQL": f"postgres:{database}", "Redis": "redis-server"})
        for url, path, body, auth, _groups in loads.values():  # warm up: connection pools, caches
            wrk(url, path, body, auth, 3, args.connections, f"warm-{uuid.uuid4().hex[:8]}")
        rows: dict[str, list[Run]] = {name: [] for name in loads}
        for _ in range(args.rounds):
            for name, (url, path, body, auth, groups) in loads.items():
                rows[name].append(measure(url, path, body, auth, args, groups, name))
    finally:
        for proc, _base in servers.values():
            stop(proc)
    report(rows, args)
    return 0


def report(rows: dict[str, list[Run]], args) -> None:
    med = statistics.median
    print(f"wrk -t2 -c{args.connections} -d{args.duration}s × {args.rounds} rounds; gunicorn gthread "
          f"{SERVER['workers']} workers × {SERVER['threads']} threads on CPU {API_CPUS}; sandbox and wrk on CPU "
          f"{OTHER_CPUS}; PostgreSQL and Redis unpinned\n")
    print("| server | req/s (median) | p50 ms | p99 ms | not 201 | CPU ms per request (median), by process |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, runs in rows.items():
        groups = runs[0].cpu_ms.keys()
        cpu = ", ".join(f"{g} {med([r.cpu_ms[g] for r in runs]):.2f}" for g in groups)
        total = med([sum(r.cpu_ms.values()) for r in runs])
        print(f"| {name} | {med([r.rps for r in runs]):.0f} | {med([r.p50_ms for r in runs]):.1f} | "
              f"{med([r.p99_ms for r in runs]):.1f} | {sum(r.bad for r in runs)} | {cpu}; total {total:.2f} |")
    print()
    ref = med([r.rps for r in rows["reference (8 INSERTs)"]])
    for name, runs in rows.items():
        if not name.startswith("reference"):
            print(f"ratio {name} / reference (req/s medians): {med([r.rps for r in runs]) / ref:.2f}")
    shaped = rows.get("payment-shaped reference (bare stack)")
    if shaped and "payments" in rows:
        print(f"ratio payments / payment-shaped reference (req/s medians): "
              f"{med([r.rps for r in rows['payments']]) / med([r.rps for r in shaped]):.2f}")


if __name__ == "__main__":
    sys.exit(main())
