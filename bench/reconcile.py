"""Reconciliation at channel scale: N operations of one channel's day in PostgreSQL, the channel's
statement of that day served over HTTP as a channel would (chunked, generated as it is sent), with
a known number of discrepancies of each class planted; ``payrouter reconcile --channel bench
--date DAY`` run as a process of its own, its wall time and peak RSS measured (os.wait4's
ru_maxrss: the kernel's own peak, not a sample), and its issues checked against the planted ones:
every one found, nothing else.

Operations and attempts are written with PostgreSQL ``COPY … FROM STDIN`` (psycopg), text rows
built in Python: the fast bulk path, not the API (a day of millions of payments through the API
would take hours, and reconciliation reads only rows).

With ``--recent``: near-real-time passes (``reconcile_recent``) over windows of 1, 10 and 60
minutes at the end of the day, each after a previous pass, to show a pass costs what its window
holds, not the day.

    .venv/bin/python bench/reconcile.py --database-url postgresql://postgres@127.0.0.1/payrouter_bench_h13 \\
        --redis-url redis://127.0.0.1:6379/8 --sizes 100000 300000 1000000 --plant 50 --recent \\
        --json docs/reconcile_scale.json --plot docs/reconcile_scale.png
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from channels.config import Cost  # noqa: E402

CHANNEL = "bench"
COST = Cost(percent=Decimal("1.8"), fixed=20)
DAY = dt.date(2026, 3, 2)
MERCHANT = "mer_bench"
# Discrepancies planted on existing operations (by index), each class its own operations.
ON_OPERATIONS = ("missing_at_channel", "amount_mismatch", "fee_mismatch", "theirs_failed", "ours_failed", "pending")
EXPECTED_KIND = {"theirs_failed": "status_mismatch", "ours_failed": "status_mismatch",
                 "pending": "pending_in_payrouter"}


class Day:
    """The generated day: operation i settles at second i·86400/N, its amount and fee follow from i."""

    def __init__(self, n: int, plant: int):
        self.n, self.plant = n, plant
        stride = n // (plant * len(ON_OPERATIONS) + 1)
        self.planted = {name: {(k * len(ON_OPERATIONS) + c) * stride + 1 for k in range(plant)}
                        for c, name in enumerate(ON_OPERATIONS)}
        self.kind_of = {i: name for name, ids in self.planted.items() for i in ids}
        self.start = dt.datetime.combine(DAY, dt.time())
        self._fees: dict[int, int] = {}

    def fee(self, amount: int) -> int:
        fee = self._fees.get(amount)
        if fee is None:
            fee = self._fees[amount] = COST.fee(amount)
        return fee

    @staticmethod
    def amount(i: int) -> int:
        return 100 + (i * 7919) % 99_900

    def second(self, i: int) -> int:
        return i * 86400 // self.n

    def first_index_from(self, second: int) -> int:
        return -(-second * self.n // 86400)

    def expected(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for name, ids in self.planted.items():
            found.setdefault(EXPECTED_KIND.get(name, name), set()).update(f"sbx_{i:010d}" for i in ids)
        found["missing_in_payrouter"] = {f"sbx_ghost_{k}" for k in range(self.plant)}
        found["unknown_at_channel"] = {f"sbx_review_{k}" for k in range(self.plant)}
        return found

    def statement(self, since_second: int = 0, block: int = 2000):
        """The CSV, in blocks of lines (bytes), from ``since_second`` of the day on."""
        out = ["channel_reference,operation,amount,currency,status,fee,settled_at\n"]
        day = DAY.isoformat()
        for i in range(self.first_index_from(since_second), self.n):
            kind = self.kind_of.get(i)
            if kind == "missing_at_channel":
                continue
            amount, status = self.amount(i), "succeeded"
            if kind == "amount_mismatch":
                amount += 1
            if kind == "theirs_failed":
                status = "failed"
            fee = self.fee(amount) if status == "succeeded" else 0
            if kind == "fee_mismatch":
                fee += 1
            s = self.second(i)
            out.append(f"sbx_{i:010d},payment,{amount},USD,{status},{fee},{day}T{s // 3600:02d}:{s // 60 % 60:02d}:"
                       f"{s % 60:02d}Z\n")
            if len(out) >= block:
                yield "".join(out).encode()
                out = []
        if since_second == 0:
            for k in range(self.plant):
                out.append(f"sbx_ghost_{k},payment,5000,USD,succeeded,{self.fee(5000)},{day}T12:00:00Z\n")
        yield "".join(out).encode()

    def operations(self, block: int = 20000):
        """COPY text rows of operations and of attempts, in blocks."""
        ops, attempts = [], []
        for i in range(self.n):
            kind = self.kind_of.get(i)
            status = {"ours_failed": "failed", "pending": "processing"}.get(kind, "succeeded")
            at = (self.start + dt.timedelta(seconds=self.second(i))).isoformat(sep=" ")
            ref = f"sbx_{i:010d}"
            ops.append(f"pay_b{i:010d}\t{MERCHANT}\tf\tpayment\t{status}\t2\t{self.amount(i)}\tUSD\t0\t0\tref{i}\t{{}}\t"
                       f"{{}}\t{CHANNEL}\t{ref}\t0\tf\t{at}\t{at}\n")
            attempts.append(f"att_b{i:010d}\tpay_b{i:010d}\t1\t{CHANNEL}\t{status}\t{ref}\t{at}\t{at}\n")
            if len(ops) >= block:
                yield "".join(ops), "".join(attempts)
                ops, attempts = [], []
        at = (self.start + dt.timedelta(hours=6)).isoformat(sep=" ")
        for k in range(self.plant):  # made, acknowledged, then "unknown operation" to the channel: under review
            ops.append(f"pay_review_{k}\t{MERCHANT}\tf\tpayment\tprocessing\t1\t5000\tUSD\t0\t0\trev{k}\t{{}}\t{{}}\t"
                       f"{CHANNEL}\tsbx_review_{k}\t0\tt\t{at}\t{at}\n")
        yield "".join(ops), "".join(attempts)


OP_COLUMNS = ("id, merchant_id, livemode, kind, status, version, amount, currency, fee, amount_refunded, reference, "
              "metadata, routing, channel, channel_reference, query_count, review, created_at, updated_at")
ATTEMPT_COLUMNS = "id, operation_id, seq, channel, status, channel_reference, created_at, updated_at"


def prepare_database(url: str, env: dict, day: Day) -> float:
    """A new database, migrated, with the day's operations; the seconds the COPY took."""
    base, name = url.rsplit("/", 1)
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    subprocess.run([sys.executable, "-c", "from app.adapters import migrate; migrate.upgrade()"], env=env,
                   check=True, cwd=ROOT)
    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("INSERT INTO merchants (id, name, created_at) VALUES (%s, 'Bench', now())", (MERCHANT,))
        with conn.cursor() as cur:
            with cur.copy(f"COPY operations ({OP_COLUMNS}) FROM STDIN") as copy:
                pending_attempts = tempfile.TemporaryFile("w+")
                for ops, attempts in day.operations():
                    copy.write(ops)
                    pending_attempts.write(attempts)
            pending_attempts.seek(0)
            with cur.copy(f"COPY attempts ({ATTEMPT_COLUMNS}) FROM STDIN") as copy:
                while chunk := pending_attempts.read(1 << 20):
                    copy.write(chunk)
        conn.commit()
        conn.execute("ANALYZE operations")
        conn.execute("ANALYZE attempts")
    return time.perf_counter() - started


def serve(day: Day) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # noqa: N802 (http.server's name)
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            if url.path != f"/statements/{DAY.isoformat()}" or query.get("channel") != [CHANNEL]:
                self.send_error(404)
                return
            since = 0
            if "since" in query:
                moment = dt.datetime.fromisoformat(query["since"][0]).replace(tzinfo=None)
                since = max(0, int((moment - day.start).total_seconds()))
            self.send_response(200)
            self.send_header("Content-Type", "text/csv; charset=utf-8")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for block in day.statement(since):
                if block:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
            self.wfile.write(b"0\r\n\r\n")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def run_measured(command: list[str], env: dict) -> tuple[float, int, str, int]:
    """(wall seconds, peak RSS bytes, stdout, exit status) of one process."""
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=err)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 3):  # say why: the bench's own report would only fail to parse
        err.seek(0)
        sys.stderr.write(err.read().decode()[-4000:])
    out.seek(0)
    return wall, usage.ru_maxrss * 1024, out.read().decode(), proc.returncode


RECENT = """
import datetime as dt, json, sys, time
from app.adapters.db import unit_of_work
from app.adapters.models import ReconciliationRun, new_id
from app.services import reconcile as recon
now, width = dt.datetime.fromisoformat(sys.argv[1]), int(sys.argv[2])
end = (now - recon.SETTLE_GRACE).replace(microsecond=0)
with unit_of_work() as session:
    session.query(ReconciliationRun).filter(ReconciliationRun.mode == "continuous").delete()
    session.add(ReconciliationRun(id=new_id("recon"), channel="bench", day=end.date().isoformat(), mode="continuous",
                window_start=end - dt.timedelta(seconds=2 * width), window_end=end - dt.timedelta(seconds=width),
                statement_lines=0, matched=0, issues=[], issue_count=0, channel_fees=0))
started = time.perf_counter()
run = recon.reconcile_recent("bench", now=now)
print(json.dumps({"seconds": time.perf_counter() - started, "lines": run.statement_lines,
                  "issues": run.issue_count}))
"""


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def measure(n: int, args, env_base: dict) -> dict:
    day = Day(n, args.plant)
    server = serve(day)
    with tempfile.TemporaryDirectory() as var:
        channels = Path(var) / "channels.yaml"
        channels.write_text(json.dumps({"channels": [{
            "id": CHANNEL, "adapter": "sandbox", "methods": ["card"], "currencies": ["USD"],
            "operations": ["payment"], "cost": {"percent": str(COST.percent), "fixed": COST.fixed},
            "timeout_ms": 30000, "config": {"base_url": f"http://127.0.0.1:{server.server_port}",
                                             "secret_env": "BENCH_SECRET"}}]}))
        env = {**env_base, "PAYROUTER_CHANNELS": str(channels), "PAYROUTER_VAR_DIR": var, "BENCH_SECRET": "x" * 32,
               "PAYROUTER_RECONCILE_INTERVAL": "0"}
        load_seconds = prepare_database(args.database_url, env, day)
        before = uptime()
        wall, rss, out, code = run_measured([sys.executable, "-m", "app", "reconcile", "--channel", CHANNEL,
                                             "--date", DAY.isoformat(), "--json"], env)
        after = uptime()
        report = json.loads(out)
        # The run keeps a sample of its issues: all of them are read back as `reconcile export` streams them.
        export_wall, export_rss, exported, _ = run_measured([sys.executable, "-m", "app", "reconcile", "export",
                                                             report["id"]], env)
        found: dict[str, set[str]] = {}
        for issue in csv.DictReader(io.StringIO(exported)):
            found.setdefault(issue["issue"], set()).add(issue["channel_reference"])
        expected = day.expected()
        result = {"n": n, "lines": report["statement_lines"], "matched": report["matched"], "exit": code,
                  "seconds": round(wall, 2), "peak_rss_mb": round(rss / 2**20, 1),
                  "load_seconds": round(load_seconds, 1), "issue_count": report["issue_count"],
                  "export_seconds": round(export_wall, 2), "export_peak_rss_mb": round(export_rss / 2**20, 1),
                  "issues": {kind: len(refs) for kind, refs in sorted(found.items())},
                  "all_found_nothing_else": found == expected, "uptime_before": before, "uptime_after": after}
        if found != expected:
            result["unexpected"] = {k: sorted(found.get(k, set()) ^ expected.get(k, set()))[:5]
                                    for k in set(found) | set(expected)}
        if args.recent:
            result["recent"] = []
            now = dt.datetime.combine(DAY, dt.time(23, 59, 0)) + dt.timedelta(seconds=10)
            for width in (60, 600, 3600):
                runs = []
                for _ in range(args.repeat):  # the machine is shared: the median of a few passes
                    seconds, rss, out, code = run_measured([sys.executable, "-c", RECENT, now.isoformat(),
                                                            str(width)], env)
                    runs.append({**json.loads(out), "process_seconds": round(seconds, 2),
                                 "peak_rss_mb": round(rss / 2**20, 1)})
                runs.sort(key=lambda r: r["seconds"])
                result["recent"].append({"window_s": width, **runs[len(runs) // 2], "uptime": uptime(),
                                         "all_seconds": [round(r["seconds"], 3) for r in runs]})
    server.shutdown()
    return result


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [r["n"] for r in results]
    fig, left = plt.subplots(figsize=(7, 4.2))
    left.plot(ns, [r["seconds"] for r in results], "o-", color="tab:blue", label="wall time (s)")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("statement lines (= operations of the day)")
    left.set_ylabel("wall time of payrouter reconcile (s)", color="tab:blue")
    right = left.twinx()
    right.plot(ns, [r["peak_rss_mb"] for r in results], "s--", color="tab:red", label="peak RSS (MB)")
    right.set_ylabel("peak RSS of the process (MB)", color="tab:red")
    right.set_ylim(0, max(500, max(r["peak_rss_mb"] for r in results) * 1.2))
    right.axhline(500, color="tab:red", linewidth=0.5, linestyle=":")
    left.set_title("Batch reconciliation of one channel's day, PostgreSQL, 2 shared cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="postgresql://…/NAME (dropped and created)")
    parser.add_argument("--redis-url")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--plant", type=int, default=50, help="discrepancies planted per class")
    parser.add_argument("--recent", action="store_true", help="also time near-real-time passes")
    parser.add_argument("--repeat", type=int, default=5, help="near-real-time passes per window (median shown)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--from", dest="sources", nargs="+", help="plot these result files instead of measuring")
    parser.add_argument("--plot", help="write a PNG of time and memory against N here")
    args = parser.parse_args()
    if args.sources:
        plot(sorted((r for path in args.sources for r in json.loads(Path(path).read_text())), key=lambda r: r["n"]),
             args.plot)
        return
    env = {**os.environ, "DATABASE_URL": args.database_url, "REDIS_URL": args.redis_url}
    results = []
    for n in args.sizes:
        results.append(measure(n, args, env))
        print(json.dumps(results[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
