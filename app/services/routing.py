"""Routing: the facts of a request, the live rule set's decision, and channel availability
(capabilities from the channels file, degradation switches, circuit breakers)."""
from __future__ import annotations

import random
from datetime import datetime, timezone

import redis

from app.adapters import metrics
from app.adapters.channels_runtime import registry
from app.domain.errors import InvalidRequest, LimitExceeded, NoRoute, RuleDeclined
from app.services import breaker, success_rates, switches
from channels.modes import mode_of
from rules.model import Fee


class Availability:
    """Why a candidate channel cannot carry this operation now (None: it can). ``livemode``: the
    operation's mode; a channel of the other mode is dropped with reason ``mode``."""

    def __init__(self, livemode: bool = False):
        self.mode = mode_of(livemode)

    def drop_reason(self, channel_id: str, *, operation: str, currency: str, method: str | None) -> str | None:
        channels = registry()
        if operation == "withdrawal":
            method = None  # a payout goes to a destination; the channel's methods are pay-in methods
        if channel_id not in channels:
            return "unknown_channel"
        if channels.get(channel_id).spec.mode != self.mode:
            return "mode"
        if switches.is_on(f"channel:{channel_id}"):
            return "switched_off"
        reason = channels.supports(channel_id, operation, currency, method)
        if reason:
            return reason
        if breaker.state(channel_id) == "open":
            return "circuit_open"
        return None

    # The inputs of a cost or success_rate route (rules.decide.Strategist).
    rng = random.Random()  # exploration's random source; tests and the bench seed their own

    def costs(self, channels: tuple[str, ...]) -> dict[str, Fee]:
        known = registry()
        return {ch: Fee(known.get(ch).spec.cost.percent, known.get(ch).spec.cost.fixed)
                for ch in channels if ch in known}

    def outcomes(self, channels: tuple[str, ...], *, window_minutes: int, operation: str, currency: str,
                 method: str | None) -> dict[str, tuple[int, int]] | None:
        return success_rates.counts(channels, window_minutes=window_minutes, kind=operation, method=method,
                                    currency=currency)


class LedgerOnly:
    """For operations that never reach a channel by routing (balance payments, refunds that
    follow their payment): the rules still decide declines, limits and fees; no channel is dropped."""

    def drop_reason(self, channel_id: str, *, operation: str, currency: str, method: str | None) -> str | None:
        return None


def availability_for(kind: str, body: dict, livemode: bool):
    """What the API decides an operation of ``kind`` with: refunds (they follow their payment) and
    balance payments (inside the ledger) reach no channel by routing; the rest the channels of its mode."""
    if kind == "refund" or (body.get("payment_method") or {}).get("type") == "balance":
        return LedgerOnly()
    return Availability(livemode)


def require_instrument(kind: str, body: dict) -> None:
    """A simulated body names what its kind would: a withdrawal its ``destination``, a payment or top-up
    its ``payment_method``; a refund needs neither (it follows its payment)."""
    if kind == "refund":
        return
    wanted = "destination" if kind == "withdrawal" else "payment_method"
    if not body.get(wanted):
        raise InvalidRequest(f"Missing required param: {wanted}", param=wanted, code="parameter_missing")


def facts(kind: str, merchant, body: dict, *, amount: int, currency: str, now: datetime | None = None) -> dict:
    from rules.decide import facts_for

    instrument = body.get("payment_method") or body.get("destination") or {}
    if "token" in instrument:  # a card token is no fact: no rule reads it, no decision carries it
        instrument = {k: v for k, v in instrument.items() if k != "token"}
    return facts_for(kind, amount, currency, instrument,
                     body.get("customer") or {}, merchant.id, merchant.category, body.get("metadata") or {},
                     now or datetime.now(timezone.utc))


def decide(kind: str, merchant, body: dict, *, amount: int, currency: str, split_key: str, availability=None,
           defer_scores: bool = False):
    """The decision for this request under the live rule set (no side effect); by default only
    channels of the merchant's mode (``merchant.livemode``: the API key's) are candidates.
    ``defer_scores``: a ``success_rate`` route's counts are left for ``complete`` to read."""
    from app.services import rules_runtime as runtime

    with metrics.RULES_DECISION.time():
        return runtime.decide(facts(kind, merchant, body, amount=amount, currency=currency),
                              availability or Availability(merchant.livemode), split_key=split_key,
                              defer_scores=defer_scores)


def complete(decision, reservation=None):
    """Finish a decision made with ``defer_scores`` and send ``reservation`` (a ``rules.limits.Pending``)
    in ONE Redis round trip: the success-rate MGET and the limit script in one pipeline (either alone
    when only one is needed). Returns the completed decision and the script's answer for
    ``rules.limits.settle`` (None when nothing was sent; a ``RedisError`` instance when Redis could not
    answer: the scores then fall back to the listed order, ``strategy_fallback: redis_unavailable``)."""
    from app.adapters.redis_conn import get_redis
    from rules import decide as decide_mod
    from rules import limits

    needed = decision.scores_needed
    send = reservation is not None and bool(reservation.keys)
    if needed is None and not send:
        return decision, None
    keys = None if needed is None else success_rates.window_keys(
        needed.channels, window_minutes=needed.strategy.window_minutes, kind=needed.operation,
        method=needed.method, currency=needed.currency)
    try:
        pipe = get_redis().pipeline(transaction=False)
        if keys is not None:
            pipe.mget(keys)
        if send:
            limits.send(pipe, reservation)
        answers = pipe.execute(raise_on_error=False)
    except redis.RedisError as exc:
        return decide_mod.with_counts(decision, None), exc if send else None
    counts = None
    if keys is not None:
        values = answers.pop(0)
        counts = None if isinstance(values, Exception) else success_rates.tally(
            needed.channels, needed.strategy.window_minutes, values)
    return decide_mod.with_counts(decision, counts), answers[0] if send else None


def refuse_if_declined(decision) -> None:
    """Raise the contract's 402 for a decision that refuses the operation."""
    if decision.outcome != "decline":
        return
    payload = decision.to_dict()
    code = decision.decline_code
    if code == "no_route":
        raise NoRoute("No channel can carry this operation: " + (
            ", ".join(f"{d['channel']} ({d['reason']})" for d in payload["dropped"]) or "no candidates"),
            decision=payload)
    if code == "limit_exceeded":
        raise LimitExceeded(f"Declined by rule '{decision.declined_by}': limit exceeded", decision=payload)
    raise RuleDeclined(f"Declined by rule '{decision.declined_by}': {code}", decision=payload)
