"""Replay (contract §3 ``rules replay``, the console's "Replay"): the last N operations re-decided under
the live sets and under a draft, counting what would change (channel, fee, decline) with examples.

The console never replays in its web request: ``start_replay`` queues the work on the batch queue,
whose worker process does it, and ``replay_status`` reads the result the page fetches. The CLI's
``rules replay`` runs ``replay`` in the operator's own process.
"""
from __future__ import annotations

import random
import re
import uuid
from types import SimpleNamespace

import redis
from sqlalchemy import select

from app.adapters.db import read_only
from app.adapters.models import Merchant, Operation
from app.domain.errors import InvalidRequest, NotFound, ServiceUnavailable
from app.services import routing
from app.services import rules_runtime as runtime
from app.services.rules_workspace import checked, owner, sides
from rules.engine import CompiledRules

MAX_REPLAY = 10_000
EXAMPLES = 5


class _NeverExplore(random.Random):
    """A replay compares orders, not exploration's draws: a strategy never explores in it."""

    def random(self) -> float:
        return 1.0


class _Remembered:
    """Availability asked once per (channel, operation, currency, method) during one replay; a
    strategy's inputs (costs, live success counts) passed through from it, without exploration."""

    rng = _NeverExplore()

    def __init__(self, inner):
        self.inner, self.seen = inner, {}

    def costs(self, channels):
        return self.inner.costs(channels) if hasattr(self.inner, "costs") else None

    def outcomes(self, channels, **key):
        return self.inner.outcomes(channels, **key) if hasattr(self.inner, "outcomes") else None

    def drop_reason(self, channel_id, *, operation, currency, method):
        key = (channel_id, operation, currency, method)
        if key not in self.seen:
            self.seen[key] = self.inner.drop_reason(channel_id, operation=operation, currency=currency,
                                                    method=method)
        return self.seen[key]


def _summary(decision, refund_channel: str | None = None) -> dict:
    return {"outcome": decision.outcome, "decline_code": decision.decline_code,
            "channel": refund_channel if refund_channel is not None else decision.channel,
            "fee": decision.fee, "matched_rules": list(decision.matched_rules)}


def _recent(last: int, merchant: str | None):
    with read_only() as session:
        query = select(Operation).order_by(Operation.created_at.desc(), Operation.id.desc()).limit(last)
        if merchant is not None:
            query = query.where(Operation.merchant_id == merchant)
        ops = [SimpleNamespace(**{name: getattr(op, name) for name in _STORED}) for op in session.scalars(query)]
        ids = {op.merchant_id for op in ops}
        categories = {m.id: m.category for m in session.scalars(select(Merchant).where(Merchant.id.in_(ids)))} \
            if ids else {}
    return ops, categories


_STORED = ("id", "merchant_id", "livemode", "kind", "status", "amount", "currency", "fee", "reference",
           "idempotency_key", "metadata_", "customer", "payment_method", "destination", "channel", "created_at")


def replay(source: str, last: int = 100, merchant: str | None = None) -> dict:
    """Re-decide the last ``last`` operations (their stored facts, at their own hour and weekday) under
    the live sets and under the draft, with today's channel availability for both, so every difference
    comes from the rules: counts of changed channel, fee and decline, and examples of each. A draft of
    ``merchant``'s own set replays that merchant's operations only; the platform's, everyone's (each
    with its merchant's own live set on both sides)."""
    merchant = owner(merchant)
    if type(last) is not int or not 1 <= last <= MAX_REPLAY:
        raise InvalidRequest(f"last must be an integer from 1 to {MAX_REPLAY}", param="last")
    ruleset = checked(source, merchant)
    ops, categories = _recent(last, merchant)
    matcher = CompiledRules(ruleset)
    availabilities, pairs = {}, {}
    counts = {"channel": 0, "fee": 0, "decline": 0}
    examples = {"channel": [], "fee": [], "decline": []}
    changed = 0
    try:
        for op in ops:
            body = {"payment_method": op.payment_method, "destination": op.destination, "customer": op.customer,
                    "metadata": op.metadata_}
            who = SimpleNamespace(id=op.merchant_id, category=categories.get(op.merchant_id), livemode=op.livemode)
            facts = routing.facts(op.kind, who, body, amount=op.amount, currency=op.currency, now=op.created_at)
            availability = routing.availability_for(op.kind, body, op.livemode)
            avail_key = type(availability).__name__, op.livemode
            if avail_key not in availabilities:
                availabilities[avail_key] = _Remembered(availability)
            if op.merchant_id not in pairs:
                pairs[op.merchant_id] = sides(ruleset, matcher, merchant, op.merchant_id)
            live, draft = pairs[op.merchant_id]
            key = op.idempotency_key or op.reference
            before = live.decide(facts, availabilities[avail_key], key)
            after = draft.decide(facts, availabilities[avail_key], key)
            refund_channel = op.channel if op.kind == "refund" else None  # a refund follows its payment
            a, b = _summary(before, refund_channel), _summary(after, refund_channel)
            if op.kind == "refund":
                a["fee"] = b["fee"] = 0  # a refund charges no fee, whatever the rules say
            what = []
            if (a["outcome"], a["decline_code"]) != (b["outcome"], b["decline_code"]):
                what.append("decline")
            elif a["outcome"] == "route":
                if a["channel"] != b["channel"]:
                    what.append("channel")
                if a["fee"] != b["fee"]:
                    what.append("fee")
            changed += bool(what)
            for name in what:
                counts[name] += 1
                if len(examples[name]) < EXAMPLES:
                    examples[name].append({
                        "operation": op.id, "kind": op.kind, "amount": op.amount, "currency": op.currency,
                        "merchant": op.merchant_id, "created_at": op.created_at.isoformat() + "Z",
                        "stored": {"status": op.status, "channel": op.channel, "fee": op.fee},
                        "live": a, "draft": b})
    finally:
        matcher.close()
    return {"replayed": len(ops), "last": last, "live_version": runtime.current().version, "merchant": merchant,
            "changed": changed, "counts": counts, "examples": examples}


REPLAY_JOB = "app.services.rules_replay.replay"
REPLAY_TIMEOUT = 600  # seconds a replay job may run on its worker
REPLAY_KEPT = 3600  # seconds its result stays readable
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


def start_replay(source: str, last: int, merchant: str | None = None) -> str:
    """Queue a replay on the batch queue (its worker process does the work, so the API and console
    processes are never slowed by it); returns the job id that ``replay_status`` reads. What can be
    refused at once (last, the merchant, a draft with problems) is refused here."""
    from app.adapters import jobs

    merchant = owner(merchant)
    if type(last) is not int or not 1 <= last <= MAX_REPLAY:
        raise InvalidRequest(f"last must be an integer from 1 to {MAX_REPLAY}", param="last")
    checked(source, merchant)
    try:
        job = jobs.enqueue(jobs.BATCH, REPLAY_JOB, source, last, merchant, job_id=uuid.uuid4().hex,
                           job_timeout=REPLAY_TIMEOUT, result_ttl=REPLAY_KEPT, failure_ttl=REPLAY_KEPT)
    except redis.RedisError:
        raise ServiceUnavailable("a replay runs on the job queue, and Redis cannot be reached: try again "
                                 "shortly") from None
    return job.id


def replay_status(job_id: str) -> dict:
    """``{"status": "queued" | "started" | "finished" | "failed", "result"?, "error"?}`` of a replay job."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    from app.adapters.redis_conn import get_redis

    if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
        raise NotFound("No such replay", param="job")
    try:
        job = Job.fetch(job_id, connection=get_redis())
        if not job.args or job.args[0] != REPLAY_JOB:
            raise NotFound("No such replay", param="job")
        status = job.get_status().value if job.get_status() is not None else "queued"
        if status == "finished":
            return {"status": status, "result": job.return_value()}
        if status in ("failed", "stopped", "canceled"):
            result = job.latest_result()
            why = (getattr(result, "exc_string", None) or "the replay failed").strip().splitlines()
            return {"status": "failed", "error": why[-1] if why else "the replay failed"}
    except NoSuchJobError:
        raise NotFound("No such replay (a result is kept for an hour)", param="job") from None
    except redis.RedisError:
        raise ServiceUnavailable("Redis cannot be reached: the replay's result cannot be read now") from None
    return {"status": status}
