"""Reconciliation on the streaming path: the statement comes over real HTTP in chunks, is staged in
the database (COPY on PostgreSQL, batched inserts on SQLite) and matched there in SQL."""
import csv
import datetime as dt
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

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from app.adapters.db import unit_of_work
from app.adapters.models import Attempt, Operation, ReconciliationIssue, ReconciliationRun, new_id
from app.adapters.models import reconciliation_lines as LINES
from app.entrypoints.cli import main
from channels.config import ChannelSpec, Cost
from channels.sandbox.adapter import SandboxChannel
from tests import builders

DAY = dt.date(2026, 3, 2)
COST = Cost(percent=Decimal("1.8"), fixed=20)
HEADER = b"channel_reference,operation,amount,currency,status,fee,settled_at\n"


class Statement:
    """A channel's statement host: serves ``blocks`` (bytes) as a chunked answer, or ``days[date]``
    for that date's statement when the test wrote one; ``cut``: the connection closes after the
    blocks without the terminating chunk (a body broken off); ``delay``: seconds it waits before
    the last block (a slow channel)."""

    def __init__(self):
        self.blocks, self.cut, self.days, self.delay = [HEADER], False, {}, 0.0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802
                day = self.path.split("?", 1)[0].rsplit("/", 1)[-1]
                blocks = owner.days.get(day, owner.blocks)
                self.send_response(200)
                self.send_header("Content-Type", "text/csv")
                self.send_header("Transfer-Encoding", "chunked")
                if owner.cut:
                    self.send_header("Connection", "close")
                self.end_headers()
                for number, block in enumerate(blocks, 1):
                    if number == len(blocks) and owner.delay:
                        self.wfile.flush()
                        time.sleep(owner.delay)
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                if owner.cut:
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(b"0\r\n\r\n")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.handle_error = lambda request, address: None  # a client that stops reading early
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def line(self, ref, amount, status="succeeded", fee=None, at="10:00:00", operation="payment", currency="USD",
             day=None):
        """A line on the statement (``day``: on that date's statement only, dated that day)."""
        fee = (COST.fee(amount) if status == "succeeded" else 0) if fee is None else fee
        blocks = self.blocks if day is None else self.days.setdefault(day.isoformat(), [HEADER])
        blocks.append(f"{ref},{operation},{amount},{currency},{status},{fee},{day or DAY}T{at}Z\n".encode())


def _ours(merchant_id, ref, amount, status="succeeded", review=False, attempt=True, kind="payment", at=None,
          settled=None):
    """An operation of ours on ``srv`` with its attempt: made ``at`` (default 10:00 on DAY), its
    outcome recorded ``settled`` (default: at once)."""
    at = at or dt.datetime.combine(DAY, dt.time(10))
    prefix = {"payment": "pay", "refund": "re", "topup": "top", "withdrawal": "wd"}[kind]
    with unit_of_work() as session:
        op = Operation(id=new_id(prefix), merchant_id=merchant_id, kind=kind, status=status, version=2,
                       amount=amount, currency="USD", fee=0, reference=new_id("ref"), channel="srv",
                       channel_reference=ref, routing={}, metadata_={}, review=review, created_at=at,
                       updated_at=settled or at)
        session.add(op)
        session.flush()
        if attempt:
            session.add(Attempt(id=new_id("att"), operation_id=op.id, seq=1, channel="srv", status=status,
                                channel_reference=ref, created_at=at, updated_at=settled or at))
    return op.id


def _reconcile():
    return CliRunner().invoke(main, ["reconcile", "--channel", "srv", "--date", DAY.isoformat(), "--json"])


def _staged() -> int:
    with unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(LINES))


def test_every_class_of_discrepancy_is_found_and_nothing_else(statement):
    merchant_id, _ = builders.merchant("Srv")
    _ours(merchant_id, "r_ok", 1000)
    statement.line("r_ok", 1000)
    statement.line("r_ghost", 2000)  # missing_in_payrouter
    _ours(merchant_id, "r_absent", 3000)  # missing_at_channel
    _ours(merchant_id, "r_amount", 4000)
    statement.line("r_amount", 4001)  # amount_mismatch
    _ours(merchant_id, "r_fee", 5000)
    statement.line("r_fee", 5000, fee=COST.fee(5000) + 1)  # fee_mismatch
    _ours(merchant_id, "r_theirs_failed", 6000)
    statement.line("r_theirs_failed", 6000, status="failed")  # status_mismatch
    _ours(merchant_id, "r_ours_failed", 7000, status="failed")
    statement.line("r_ours_failed", 7000)  # status_mismatch, the other way
    _ours(merchant_id, "r_pending", 8000, status="processing")
    statement.line("r_pending", 8000)  # pending_in_payrouter
    _ours(merchant_id, "r_review", 9000, status="processing", review=True, attempt=False)  # unknown_at_channel
    result = _reconcile()
    assert result.exit_code == 3, result.output
    report = json.loads(result.output)
    assert sorted((i["issue"], i["channel_reference"]) for i in report["issues"]) == sorted([
        ("missing_in_payrouter", "r_ghost"), ("missing_at_channel", "r_absent"), ("amount_mismatch", "r_amount"),
        ("fee_mismatch", "r_fee"), ("status_mismatch", "r_theirs_failed"), ("status_mismatch", "r_ours_failed"),
        ("pending_in_payrouter", "r_pending"), ("unknown_at_channel", "r_review")])
    assert (report["statement_lines"], report["matched"]) == (7, 1)
    assert report["channel_fees"] == sum(COST.fee(a) for a in (1000, 2000, 4001, 7000, 8000)) + COST.fee(5000) + 1
    fee_issue = next(i for i in report["issues"] if i["issue"] == "fee_mismatch")
    assert fee_issue["expected_fee"] == COST.fee(5000) and fee_issue["theirs"]["fee"] == COST.fee(5000) + 1
    assert _staged() == 0  # the pass's lines are gone; the issues stay
    summary = report["summary"]  # stored with the run
    assert (summary["lines"], summary["matched"]) == (7, 1)
    assert summary["by_class"] == {"missing_in_payrouter": 1, "missing_at_channel": 1, "amount_mismatch": 1,
                                   "fee_mismatch": 1, "status_mismatch": 2, "pending_in_payrouter": 1,
                                   "unknown_at_channel": 1}
    assert summary["theirs"] == {"USD": {"lines": 7, "amount": 1000 + 2000 + 4001 + 5000 + 6000 + 7000 + 8000,
                                         "fee": report["channel_fees"]}}
    # ours: the final outcomes in the window (not the processing ones)
    assert summary["ours"] == {"USD": {"outcomes": 6, "amount": 1000 + 3000 + 4000 + 5000 + 6000 + 7000}}
    fees = CliRunner().invoke(main, ["reconcile", "issues", "--kind", "fee_mismatch", "--json"])
    assert [i["channel_reference"] for i in json.loads(fees.output)] == ["r_fee"]
    exported = CliRunner().invoke(main, ["reconcile", "export", report["id"]])
    assert exported.exit_code == 0, exported.output
    rows = list(csv.DictReader(exported.output.splitlines()))
    assert len(rows) == 8 and {row["status"] for row in rows} == {"open"}
    assert next(r for r in rows if r["issue"] == "fee_mismatch")["expected_fee"] == str(COST.fee(5000))
    assert CliRunner().invoke(main, ["reconcile", "export", "recon_nope"]).exit_code == 1

    # The same day again: the same issues (same rows), none added, still open.
    again = _reconcile()
    assert again.exit_code == 3
    assert sorted(i["id"] for i in json.loads(again.output)["issues"]) == sorted(i["id"] for i in report["issues"])
    with unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(ReconciliationIssue)) == 8
        assert session.scalar(select(func.count()).select_from(ReconciliationRun)) == 2


def test_a_clean_day_exits_0_and_the_fee_rounds_half_up_like_the_configured_cost(statement):
    merchant_id, _ = builders.merchant("Srv")
    for amount in (1, 25, 139, 2778, 99_999, 10**12 + 7):  # 1.8% of 2778 is 50.004; of 139, 2.502
        ref = f"r_{amount}"
        _ours(merchant_id, ref, amount)
        statement.line(ref, amount)
    result = _reconcile()
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["matched"] == 6


def test_a_fee_one_minor_unit_off_either_side_of_the_rounding_is_found(statement):
    """The SQL that picks the lines to look at rounds as Cost.fee does: a fee that a truncating or
    rounding-up formula would take for right is still reported."""
    merchant_id, _ = builders.merchant("Srv")
    _ours(merchant_id, "r_down", 139)  # 1.8% is 2.502: half-up 3, truncated 2
    statement.line("r_down", 139, fee=COST.fee(139) - 1)
    _ours(merchant_id, "r_up", 2778)  # 1.8% is 50.004: half-up 50, rounded up 51
    statement.line("r_up", 2778, fee=COST.fee(2778) + 1)
    result = _reconcile()
    assert result.exit_code == 3, result.output
    assert sorted((i["issue"], i["channel_reference"]) for i in json.loads(result.output)["issues"]) == [
        ("fee_mismatch", "r_down"), ("fee_mismatch", "r_up")]


def test_a_statement_broken_off_mid_stream_is_an_error_and_records_nothing(statement):
    merchant_id, _ = builders.merchant("Srv")
    for i in range(12_000):  # past the SQLite batch and a few chunks
        statement.line(f"r_{i}", 1000 + i)
    _ours(merchant_id, "r_0", 999)  # a discrepancy that a finished run would record
    statement.cut = True
    result = _reconcile()
    assert result.exit_code == 1, result.output
    assert "srv" in result.output
    with unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(ReconciliationRun)) == 0
        assert session.scalar(select(func.count()).select_from(ReconciliationIssue)) == 0
    assert _staged() == 0


def test_a_line_the_adapter_cannot_read_is_an_error_and_records_nothing(statement):
    statement.line("r_1", 1000)
    statement.blocks.append(b"r_2,payment,1000\n")  # two fields short
    result = _reconcile()
    assert result.exit_code == 1 and "statement" in result.output, result.output
    assert _staged() == 0


def test_a_line_listed_twice_is_a_duplicate_and_never_matched(statement):
    """A channel that sends one operation twice charges its fee twice: the reference's lines are a
    ``duplicate_in_statement`` issue (one, however many lines), none of them counts as matched, and
    a copy that also disagrees is still reported (every disagreeing line, not one per reference)."""
    merchant_id, _ = builders.merchant("Srv")
    _ours(merchant_id, "r_ok", 1000)
    statement.line("r_ok", 1000)
    _ours(merchant_id, "r_twice", 2000)
    statement.line("r_twice", 2000, at="10:00:00")
    statement.line("r_twice", 2000, at="10:05:00")
    _ours(merchant_id, "r_thrice", 3000)
    statement.line("r_thrice", 3000, at="10:00:00")
    statement.line("r_thrice", 3000, status="failed", at="10:01:00")  # a copy that disagrees on status
    statement.line("r_thrice", 3001, at="10:02:00")  # and one on amount
    result = _reconcile()
    assert result.exit_code == 3, result.output
    report = json.loads(result.output)
    assert sorted((i["issue"], i["channel_reference"]) for i in report["issues"]) == [
        ("amount_mismatch", "r_thrice"), ("duplicate_in_statement", "r_thrice"), ("duplicate_in_statement", "r_twice"),
        ("status_mismatch", "r_thrice")]
    twice = {i["channel_reference"]: i for i in report["issues"] if i["issue"] == "duplicate_in_statement"}
    assert (twice["r_twice"]["lines"], twice["r_thrice"]["lines"]) == (2, 3)
    assert twice["r_twice"]["ours"]["amount"] == 2000 and twice["r_twice"]["theirs"]["amount"] == 2000
    assert (report["statement_lines"], report["matched"]) == (6, 1)
    assert report["summary"]["by_class"]["duplicate_in_statement"] == 2
    kinds = CliRunner().invoke(main, ["reconcile", "issues", "--kind", "duplicate_in_statement", "--json"])
    assert sorted(i["channel_reference"] for i in json.loads(kinds.output)) == ["r_thrice", "r_twice"]
    assert _staged() == 0


BAD_LINES = {
    "a bare CR inside a field": f"r_cr\rx,payment,1000,USD,succeeded,38,{DAY}T10:00:00Z\n".encode(),
    "an amount beyond 64 bits": f"r_big,payment,{2**64},USD,succeeded,0,{DAY}T10:00:00Z\n".encode(),
    "an amount beyond MAX_AMOUNT": f"r_max,payment,{10**15 + 1},USD,succeeded,0,{DAY}T10:00:00Z\n".encode(),
    "a negative amount": f"r_neg,payment,-5,USD,succeeded,0,{DAY}T10:00:00Z\n".encode(),
    "a reference wider than its column": f"{'r' * 201},payment,1000,USD,succeeded,38,{DAY}T10:00:00Z\n".encode(),
    "an empty reference": f",payment,1000,USD,succeeded,38,{DAY}T10:00:00Z\n".encode(),
    "a currency of four letters": f"r_cur,payment,1000,USDX,succeeded,38,{DAY}T10:00:00Z\n".encode(),
    "a NUL in a reference": f"r_\x00,payment,1000,USD,succeeded,38,{DAY}T10:00:00Z\n".encode(),
    "a status wider than its column": f"r_st,payment,1000,USD,{'s' * 21},38,{DAY}T10:00:00Z\n".encode(),
    "a line of 200,000 characters": b"r_long," + b"p" * 200_000 + b",1000,USD,succeeded,38,2026-03-02T10:00:00Z\n",
    "a body with no newline at all": b"x" * 300_000,
    "not UTF-8": b"r_\xff,payment,1000,USD,succeeded,38,2026-03-02T10:00:00Z\n",
}


@pytest.mark.parametrize("why", sorted(BAD_LINES))
def test_a_bad_line_is_an_error_naming_the_statement_and_records_nothing(statement, why):
    """Whatever a line holds, the run exits 1 with a message, keeps nothing staged and records no
    run: nothing unchecked reaches COPY (PostgreSQL) or the batches (SQLite)."""
    merchant_id, _ = builders.merchant("Srv")
    _ours(merchant_id, "r_1", 1000)
    statement.line("r_1", 1000)
    statement.blocks.append(BAD_LINES[why])
    result = _reconcile()
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # said, not raised
    assert "Error: srv: " in result.output and "cannot be read" in result.output
    assert _staged() == 0
    with unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(ReconciliationRun)) == 0


def test_a_newline_inside_a_quoted_field_is_kept(statement):
    merchant_id, _ = builders.merchant("Srv")
    _ours(merchant_id, "r_a\nb", 1000)
    statement.blocks.append(f'"r_a\nb",payment,1000,USD,succeeded,{COST.fee(1000)},{DAY}T10:00:00Z\n'.encode())
    result = _reconcile()
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["matched"] == 1


def test_one_channels_bad_statement_stops_neither_the_pass_nor_the_cli_for_the_others(stack, monkeypatch):
    """Near-real-time: a channel whose statement cannot be read is skipped with a warning, its
    window stays where it was, and every other channel is still compared; `reconcile --recent`
    says which channel failed and exits 1 after running the rest."""
    from app.adapters.channels_runtime import channel as real_channel
    from app.services import reconcile as recon

    served = Statement()
    served.blocks.append(BAD_LINES["a bare CR inside a field"])
    spec = ChannelSpec(id="acq_alpha", adapter="sandbox", methods=("card",), currencies=("USD",),
                       operations=("payment",), cost=COST, timeout_ms=5000, config={"base_url": served.url})
    broken = SandboxChannel(spec, "x" * 32)
    monkeypatch.setattr(recon, "channel", lambda cid: broken if cid == "acq_alpha" else real_channel(cid))
    try:
        assert recon.run_continuous() == {"sandbox": 0, "acq_beta": 0}
        from app.adapters.redis_conn import get_redis

        get_redis().delete(recon.LEASE_KEY)
        with unit_of_work() as session:
            assert session.scalar(select(func.count()).select_from(ReconciliationRun)
                                  .where(ReconciliationRun.channel == "acq_alpha")) == 0
        time.sleep(1.1)  # windows end on whole seconds: the CLI's pass has a window of its own
        result = CliRunner().invoke(main, ["reconcile", "--recent", "--json"])
        assert result.exit_code == 1, result.output
        assert "acq_alpha" in result.stderr and "cannot be read" in result.stderr
        assert {run["channel"] for run in json.loads(result.stdout)} == {"sandbox", "acq_beta"}
    finally:
        served.server.shutdown()


_PEAK_RSS = """
import atexit, runpy, sys
atexit.register(lambda: sys.stderr.write(next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))))
sys.argv[0] = "payrouter"
runpy.run_module("app", run_name="__main__", alter_sys=True)
"""


def _bench_day(clean, n: int, plant: int, *commands: list[str]):
    """bench/reconcile.py's day of ``n`` operations (``plant`` discrepancies of each class) in the
    database and served as a statement; each command (``payrouter`` arguments, ``{run}``: the
    first's run id) run in a process of its own: (exit status, peak RSS in bytes, standard output).
    The peak is the process's own VmHWM, which it writes as it exits (``_PEAK_RSS``): the kernel's
    ru_maxrss of a child counts the size of the process it was spawned from, this test's."""
    import psycopg

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bench.reconcile import ATTEMPT_COLUMNS, CHANNEL, MERCHANT, OP_COLUMNS, Day, serve

    day = Day(n, plant=plant)
    url = clean.database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO merchants (id, name, created_at) VALUES (%s, 'Bench', now())", (MERCHANT,))
        blocks = list(day.operations())
        with cur.copy(f"COPY operations ({OP_COLUMNS}) FROM STDIN") as copy:
            for ops, _ in blocks:
                copy.write(ops)
        with cur.copy(f"COPY attempts ({ATTEMPT_COLUMNS}) FROM STDIN") as copy:
            for _, attempts in blocks:
                copy.write(attempts)
        del blocks
    server, done, run_id = serve(day), [], None
    try:
        with tempfile.TemporaryDirectory() as var:
            channels = Path(var) / "channels.yaml"
            channels.write_text(json.dumps({"channels": [{
                "id": CHANNEL, "adapter": "sandbox", "methods": ["card"], "currencies": ["USD"],
                "operations": ["payment"], "cost": {"percent": "1.8", "fixed": 20}, "timeout_ms": 30000,
                "config": {"base_url": f"http://127.0.0.1:{server.server_port}", "secret_env": "BENCH_SECRET"}}]}))
            env = {**os.environ, "DATABASE_URL": clean.database_url, "REDIS_URL": clean.redis_url,
                   "PAYROUTER_CHANNELS": str(channels), "BENCH_SECRET": "x" * 32}
            for command in commands:
                out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
                code = subprocess.call([sys.executable, "-c", _PEAK_RSS, *(run_id if arg == "{run}" else arg
                                                                           for arg in command)],
                                       env=env, stdout=out, stderr=err)
                out.seek(0)
                err.seek(0)
                peak = [int(line.split()[1]) * 1024 for line in err.read().decode().splitlines()
                        if line.startswith("VmHWM:")]
                done.append((code, peak[-1], out.read().decode()))
                run_id = run_id or json.loads(done[0][2])["id"]
    finally:
        server.shutdown()
    return day, done


def _found(issues) -> dict[str, set[str]]:
    found = {}
    for issue in issues:
        found.setdefault(issue["issue"], set()).add(issue["channel_reference"])
    return found


_DAILY = ["reconcile", "--channel", "bench", "--date", "2026-03-02", "--json"]


@pytest.mark.skipif(not os.environ.get("DATABASE_URL", "").startswith("postgresql"), reason="needs PostgreSQL")
def test_a_statement_over_16_mib_is_reconciled_in_bounded_memory(clean):
    """300,000 lines (about 22 MB of CSV, past the 16 MiB the old transport refused) reconciled by
    `payrouter reconcile` in a process of its own, whose peak RSS stays under 500 MB."""
    day, [(code, peak, out)] = _bench_day(clean, 300_000, 3, _DAILY)
    assert sum(len(block) for block in day.statement()) > 16 * 2**20
    report = json.loads(out)
    assert code == 3
    assert report["statement_lines"] == 300_000 - 3 + 3  # 3 lines left out, 3 lines we never made
    assert _found(report["issues"]) == day.expected()
    assert peak < 500 * 2**20, f"peak RSS {peak / 2**20:.0f} MB"
    assert _staged() == 0


@pytest.mark.skipif(not os.environ.get("DATABASE_URL", "").startswith("postgresql"), reason="needs PostgreSQL")
def test_a_run_with_many_issues_stays_in_bounded_memory_and_exports_them_all(clean):
    """40,000 issues (5,000 planted of each kind in 40,000 lines): the run streams the disagreeing
    rows and stores their issues chunk by chunk, so its process stays under 200 MB (~125 MB measured; holding them
    all took ~5 KB each: ~200 MB more); the run keeps the first 100, `reconcile export` streams
    every one from the issues table in pages, in a process under 150 MB (~90 MB)."""
    day, [(code, peak, out), (exported_code, export_peak, exported)] = _bench_day(
        clean, 40_000, 5_000, _DAILY, ["reconcile", "export", "{run}"])
    report = json.loads(out)
    assert code == 3 and exported_code == 0
    assert report["issue_count"] == report["open_issues"] == 40_000 and report["issues_truncated"] is True
    assert len(report["issues"]) == 100 and sum(report["summary"]["by_class"].values()) == 40_000
    rows = list(csv.DictReader(exported.splitlines()))
    assert len(rows) == 40_000 and len({row["id"] for row in rows}) == 40_000
    assert _found(rows) == day.expected()
    assert [row["id"] for row in rows[:100]] == [issue["id"] for issue in report["issues"]]
    fee = next(row for row in rows[100:] if row["issue"] == "fee_mismatch")
    assert int(fee["expected_fee"]) == COST.fee(int(fee["theirs_amount"])) != int(fee["theirs_fee"])
    assert peak < 200 * 2**20, f"peak RSS {peak / 2**20:.0f} MB"
    assert export_peak < 150 * 2**20, f"export peak RSS {export_peak / 2**20:.0f} MB"
    assert _staged() == 0


def test_the_sandbox_serves_the_lines_since_a_moment_and_refuses_a_bad_one(stack):
    """What a near-real-time pass asks for: the day's lines from ``since`` on (to the second)."""
    import requests

    from app.adapters.channels_runtime import channel

    api = builders.api(stack.client)
    first = api.post("/v1/payments", builders.payment_body(1000)).get_json()
    time.sleep(1.05)  # lines are dated to the second
    since = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    second = api.post("/v1/payments", builders.payment_body(1100)).get_json()
    sandbox = channel("sandbox")
    today = since.date()
    if since.date() != dt.datetime.now(dt.timezone.utc).date():
        pytest.skip("the day changed during the test")
    everything = {line.amount for line in sandbox.statement(today)}
    assert {1000, 1100} <= everything
    assert [line.amount for line in sandbox.statement(today, since=since)] == [1100]
    assert first["status"] == second["status"] == "succeeded"
    bad = requests.get(f"{stack.sandbox_url}/statements/{today}", params={"channel": "sandbox", "since": "soon"},
                       timeout=5)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_since"


def test_a_run_that_finds_issues_again_exports_every_one_of_them(statement, monkeypatch):
    """The daily run over a day earlier passes compared finds their issues again (one row each, the
    first run's): past its sample, its export and open count still cover all it found."""
    from app.services import reconcile as recon

    monkeypatch.setattr(recon, "ISSUE_SAMPLE", 2)
    for i in range(5):
        statement.line(f"r_ghost_{i}", 1000 + i)  # missing_in_payrouter, five times
    first = _reconcile()
    assert first.exit_code == 3, first.output
    again = _reconcile()
    assert again.exit_code == 3, again.output
    report = json.loads(again.output)
    assert (report["issue_count"], report["open_issues"], report["issues_truncated"]) == (5, 5, True)
    assert len(report["issues"]) == 2
    exported = CliRunner().invoke(main, ["reconcile", "export", report["id"]])
    assert exported.exit_code == 0, exported.output
    rows = list(csv.DictReader(exported.output.splitlines()))
    assert sorted(row["channel_reference"] for row in rows) == [f"r_ghost_{i}" for i in range(5)]
    first_id = json.loads(first.output)["id"]
    assert {row["id"] for row in rows} == {issue["id"] for issue in json.loads(
        CliRunner().invoke(main, ["reconcile", "issues", "--json"]).output) if issue["run"] == first_id}
