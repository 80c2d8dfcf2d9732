"""The "Rules" page through the Flask test client: every role reads and tries drafts; only pm/admin
publish, approve and roll back (403 otherwise); a form without its CSRF token is refused; problems
show at their line; a publish that drops live rules needs a confirmation; approval by another person."""
import json
import re

import pytest
from sqlalchemy import select

from app.adapters.db import unit_of_work
from app.adapters.models import AuditLog
from app.services import admin_users, rules_publishing
from app.services.rules_store import DEFAULT_RULES
from tests import builders
from tests.builders import CARD, unique

PASSWORD = "correct horse battery"
LIVE = DEFAULT_RULES.read_text()
CHEAPER = LIVE.replace('fee: {percent: "3.0", fixed: 0}}', 'fee: {percent: "1.0", fixed: 7}}')
DROPPING = LIVE.split("  - id: test-emails-cheap")[0] + \
    'defaults: {route: [sandbox], fee: {percent: "3.0", fixed: 0}}\n'


@pytest.fixture
def seeded(clean):
    from app.entrypoints.bootstrap import init

    init()


def _token(page: str) -> str:
    return re.search(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"', page).group(1)


class Console:
    def __init__(self, app, role: str):
        self.client = app.test_client()
        self.name = unique(role)
        admin_users.create_user(self.name, PASSWORD, role, actor="test")
        page = self.client.get("/admin/login/").get_data(as_text=True)
        answer = self.client.post("/admin/login/", data={"username": self.name, "password": PASSWORD,
                                                        "csrf_token": _token(page)})
        assert answer.status_code == 302, answer.get_data(as_text=True)

    def get(self, path="/admin/rules/"):
        return self.client.get(path)

    def post(self, path: str, **form):
        token = _token(self.get().get_data(as_text=True))
        return self.client.post("/admin/rules/" + path, data={"csrf_token": token, **form})


def test_every_role_reads_the_live_set_and_history(app, seeded):
    page = Console(app, "viewer").get()
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert 'id="live-version">version 1' in text and "block-sanctioned" in text
    assert 'class="history-row" data-version="1"' in text and "default rules" in text
    assert "formaction" not in text and "Roll back" not in text  # no Publish for a viewer
    assert len(re.findall(r"<h\d[^>]*>\s*Rules\s*</h\d>", text)) == 1  # the page's title, once


@pytest.mark.parametrize("role", ["viewer", "ops"])
def test_viewer_and_ops_cannot_publish_approve_or_roll_back(app, seeded, role):
    console = Console(app, role)
    assert console.post("publish", source=CHEAPER, reason="cheaper").status_code == 403
    assert console.post("approve", request="1").status_code == 403
    assert console.post("rollback", version="1", reason="x").status_code == 403
    assert [r["version"] for r in rules_publishing.history()] == [1]
    assert console.post("try", action="validate", source=CHEAPER).status_code == 200  # trying changes nothing


def test_a_form_without_its_csrf_token_is_refused(app, seeded):
    console = Console(app, "pm")
    answer = console.client.post("/admin/rules/publish", data={"source": CHEAPER, "reason": "no token"})
    assert answer.status_code == 400
    assert [r["version"] for r in rules_publishing.history()] == [1]


def test_problems_show_at_their_line(app, seeded):
    bad = LIVE.replace("{fact: currency, eq: EUR}", "{fact: currency, eq: EURO}")
    line = next(i for i, text in enumerate(bad.splitlines(), 1) if "EURO" in text)
    text = Console(app, "pm").post("try", action="validate", source=bad).get_data(as_text=True)
    assert f'class="problem" data-line="{line}">Line {line}: rule eur-split: ' in text
    assert f'class="bg-warning problem-line" data-line="{line}">' in text
    text = Console(app, "pm").post("try", action="validate", source=CHEAPER).get_data(as_text=True)
    assert 'id="valid"' in text


def test_diff_simulate_and_replay_render(app, seeded):
    console = Console(app, "pm")
    text = console.post("try", action="diff", source=DROPPING).get_data(as_text=True)
    assert 'class="text-danger diff-removed" data-rule="test-emails-cheap"' in text
    body = json.dumps({"amount": 1000, "currency": "USD", "payment_method": CARD})
    text = console.post("try", action="simulate", source=CHEAPER, kind="payment", body=body).get_data(as_text=True)
    assert 'id="sim-draft"' in text and 'id="sim-live"' in text
    assert "1.0% of 10.00 USD + 0.07 USD = 0.17 USD → 0.17 USD" in text  # in major units, as the fee reads
    assert "3.0% of 10.00 USD + 0.00 USD = 0.30 USD → 0.30 USD" in text
    text = console.post("try", action="replay", source=CHEAPER, last="10").get_data(as_text=True)
    assert 'id="replay-pending"' in text  # its result: test_replay_runs_on_the_batch_queue_…


def _run_batch_queue() -> None:
    from rq import Queue, SimpleWorker

    from app.adapters import jobs
    from app.adapters.redis_conn import get_redis

    SimpleWorker([Queue(jobs.BATCH, connection=get_redis())], connection=get_redis()).work(burst=True)


def test_replay_runs_on_the_batch_queue_and_the_page_fetches_its_result(app, seeded):
    """The web request only queues the replay (nothing is re-decided in it); the batch queue's worker
    does the work, and /replay/<job> answers 202 until the result is there."""
    console = Console(app, "viewer")
    text = console.post("try", action="replay", source=CHEAPER, last="10").get_data(as_text=True)
    assert "Replayed" not in text and "rules_replay.js" in text
    poll = re.search(r'id="replay-pending" data-poll="([^"]+)"', text).group(1)
    assert console.get(poll).status_code == 202
    _run_batch_queue()
    answer = console.get(poll)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert "Replayed 0 operation(s) against live version 1" in answer.get_data(as_text=True)
    assert console.get("/admin/rules/replay/" + "0" * 32).status_code == 404
    assert console.get("/admin/rules/replay/not-a-job").status_code == 404
    assert console.get("/admin/assets/rules_replay.js").status_code == 200  # served by the app, no CDN


def test_a_replay_that_failed_on_its_worker_says_so(app, seeded):
    import uuid

    from app.adapters import jobs
    from app.services import rules_replay

    job = jobs.enqueue(jobs.BATCH, rules_replay.REPLAY_JOB, "rules: [unreadable\n", 10, None,
                       job_id=uuid.uuid4().hex)
    _run_batch_queue()
    answer = Console(app, "viewer").get(f"/admin/rules/replay/{job.id}")
    assert answer.status_code == 200 and 'id="replay-failed"' in answer.get_data(as_text=True)


def test_a_merchants_own_set_on_the_rules_page(app, seeded):
    from tests import builders

    merchant_id = builders.merchant()[0]
    console = Console(app, "pm")
    page = console.get(f"/admin/rules/?merchant={merchant_id}").get_data(as_text=True)
    assert 'id="merchant-note"' in page and "no rule set of its own" in page and "none yet" in page
    own = "rules:\n  - id: beta\n    when: {fact: currency, eq: USD}\n    then: {route: [acq_beta]}\n"
    answer = console.post("publish", source=own, reason="beta for USD", merchant=merchant_id)
    assert answer.status_code == 302 and f"merchant={merchant_id}" in answer.headers["Location"]
    assert [r["version"] for r in rules_publishing.history(merchant_id)] == [2]
    assert [r["version"] for r in rules_publishing.history()] == [1]
    assert f'<option value="{merchant_id}">' in console.get().get_data(as_text=True)  # a choice from now on
    body = json.dumps({"amount": 1000, "currency": "USD", "payment_method": CARD})
    text = console.post("try", action="simulate", source=own.replace("acq_beta", "acq_alpha"), kind="payment",
                        body=body, merchant=merchant_id).get_data(as_text=True)
    assert f"{merchant_id}/beta" in text
    assert "3.0% of 10.00 USD + 0.00 USD = 0.30 USD → 0.30 USD" in text  # the platform's fee
    text = console.post("try", action="validate", source=own.replace("then: {route: [acq_beta]}",
                                                                     'then: {fee: {percent: "1", fixed: 0}}'),
                        merchant=merchant_id).get_data(as_text=True)
    assert "a merchant&#39;s rule set cannot set a fee" in text
    console.post("publish", source=own.replace("acq_beta", "acq_alpha"), reason="alpha", merchant=merchant_id)
    answer = console.post("rollback", version="2", reason="back to beta", merchant=merchant_id)
    assert answer.status_code == 302
    assert [(r["version"], r["action"]) for r in rules_publishing.history(merchant_id)][0] == (2, "rollback")


def test_publish_needs_a_reason_and_a_confirmation_to_drop_rules(app, seeded):
    console = Console(app, "pm")
    answer = console.post("publish", source=CHEAPER, reason="")
    assert answer.status_code == 400 and "a reason is required" in answer.get_data(as_text=True)
    answer = console.post("publish", source=DROPPING, reason="fewer rules")
    assert answer.status_code == 409
    text = answer.get_data(as_text=True)
    assert 'id="confirm-drop"' in text and "test-emails-cheap" in text and "Publish anyway" in text
    assert [r["version"] for r in rules_publishing.history()] == [1]
    answer = console.post("publish", source=DROPPING, reason="fewer rules", confirm_dropped="1")
    assert answer.status_code == 302
    text = console.get().get_data(as_text=True)
    assert 'id="live-version">version 2' in text and "fewer rules" in text
    with unit_of_work() as session:
        row = session.scalars(select(AuditLog).where(AuditLog.action == "rules.publish")).one()
    assert (row.actor, row.reason, row.after["dropped"]) == (console.name, "fewer rules", ["test-emails-cheap"])
    answer = console.post("rollback", version="1", reason="back")
    assert answer.status_code == 302 and rules_publishing.history()[0]["reason"] == "back"


def test_approval_by_another_pm(seeded, clean, configured):
    app = configured(clean.with_(rules_approval=True))
    author, other = Console(app, "pm"), Console(app, "admin")
    assert author.post("publish", source=CHEAPER, reason="cheaper").status_code == 302
    assert [r["version"] for r in rules_publishing.history()] == [1]
    request = rules_publishing.pending()[0]["request"]
    assert 'class="pending-row" data-request="%d"' % request in author.get().get_data(as_text=True)
    answer = author.post("approve", request=str(request))
    assert answer.status_code == 403 and "another pm or admin" in answer.get_data(as_text=True)
    assert other.post("approve", request=str(request)).status_code == 302
    row = rules_publishing.history()[0]
    assert (row["version"], row["actor"], row["approved_by"]) == (2, author.name, other.name)


def test_publish_warns_naming_a_channel_a_live_process_runs_without(app, seeded):
    """#14: as `rules publish` exits 3 with a warning, the console's publish of a set naming
    acq_beta, which a live API process could not build, is published and flashes that warning
    naming the channel and the process; once no process lacks it, no warning."""
    console = Console(app, "pm")
    with builders.process_running_without("acq_beta", host="web-9", pid=4242):
        answer = console.post("publish", source=CHEAPER, reason="cheaper")
        assert answer.status_code == 302
        text = console.get().get_data(as_text=True)
        assert "Published version 2" in text
        assert ("Warning: acq_beta is stored but not run by 1 live process(es) (api web-9 pid 4242): they could "
                "not build it and drop it from routing as unknown_channel") in text, text
    assert console.post("publish", source=LIVE, reason="back").status_code == 302
    text = console.get().get_data(as_text=True)
    assert "Published version 3" in text and "not run by" not in text


def test_approving_a_request_warns_naming_a_channel_a_live_process_runs_without(seeded, clean, configured):
    """#14: an approval makes the set live: the approver sees the same warning a publish gives."""
    app = configured(clean.with_(rules_approval=True))
    author, other = Console(app, "pm"), Console(app, "admin")
    with builders.process_running_without("acq_beta", host="web-9", pid=4243):
        assert author.post("publish", source=CHEAPER, reason="cheaper").status_code == 302
        request = rules_publishing.pending()[0]["request"]
        assert other.post("approve", request=str(request)).status_code == 302
        text = other.get().get_data(as_text=True)
        assert f"Request {request} approved and published as version 2" in text
        assert "Warning: acq_beta is stored but not run by 1 live process(es) (api web-9 pid 4243)" in text, text


def test_rollback_warns_or_refuses_as_publish_does(app, seeded):
    """Attack a14 S3 on the console: rolling back to a version naming a channel a live process runs
    without is done and flashes publish's warning; to a version naming a channel no longer stored,
    refused with publish's message, nothing made live."""
    from app.adapters.models import ChannelDefinition
    from app.services import rules_store

    console = Console(app, "pm")
    assert console.post("publish", source=CHEAPER, reason="cheaper").status_code == 302
    with builders.process_running_without("acq_beta", host="web-8", pid=4545):
        assert console.post("rollback", version="1", reason="back").status_code == 302
        text = console.get().get_data(as_text=True)
        assert "Rolled back: version 1 is live." in text
        assert "Warning: acq_beta is stored but not run by 1 live process(es) (api web-8 pid 4545)" in text, text
    assert console.post("publish", source=CHEAPER.replace("acq_alpha, acq_beta", "acq_alpha")
                        .replace("acq_alpha: 70, acq_beta: 30", "acq_alpha: 100"), reason="no beta").status_code == 302
    with unit_of_work() as session:  # acq_beta removed (what an import --prune does once no live set routes to it)
        session.delete(session.get(ChannelDefinition, "acq_beta"))
    assert console.post("rollback", version="1", reason="beta back?").status_code == 302
    text = console.get().get_data(as_text=True)
    assert "unknown channel &#39;acq_beta&#39;" in text or "unknown channel 'acq_beta'" in text, text
    with unit_of_work() as session:
        assert rules_store.live_version(session) == 3
