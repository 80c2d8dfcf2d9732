"""`payrouter reconcile` exit status (contract §4): 0 clean, 3 open issues, 1 an error. A statement
the channel garbles is an error of the run (1, saying what broke), not a bad --date (2, "use YYYY-MM-DD")."""
import datetime as dt

from click.testing import CliRunner

from app.entrypoints.cli import main
from channels.sandbox.client import SandboxClient
from tests import builders

HEADER = "channel_reference,operation,amount,currency,status,fee,settled_at\n"


def test_a_garbled_statement_exits_1_naming_the_statement_not_the_date(stack, monkeypatch):
    api = builders.api(stack.client)
    assert api.post("/v1/payments", builders.payment_body(1000)).status_code == 201
    now = dt.datetime.now(dt.timezone.utc)
    garbled = HEADER + f"sbx_1,payment,ten,USD,succeeded,0,{now.isoformat()}\n"
    monkeypatch.setattr(SandboxClient, "text_lines", lambda self, path, params=None: iter(garbled.splitlines()))
    result = CliRunner().invoke(main, ["reconcile", "--channel", "sandbox", "--date", now.date().isoformat()])
    assert result.exit_code == 1, result.output
    assert "YYYY-MM-DD" not in result.output and "statement" in result.output


def test_a_bad_date_is_still_a_usage_error(stack):
    result = CliRunner().invoke(main, ["reconcile", "--channel", "sandbox", "--date", "2026-02-30"])
    assert result.exit_code == 2 and "YYYY-MM-DD" in result.output
