"""Channels as operators see them (the "Channels" page, ``payrouter channels list``): each
channel's mode, switch, circuit and its last 15 minutes, and opening or closing a circuit by hand.

The numbers come from the attempts table, one grouped query for every channel: ``volume`` is
the calls made (attempts started in the window), ``success_rate`` the share of answered calls
that succeeded (a decline and a fault count against it; a call still waiting for its answer
does not count yet, nor does one that says nothing of the channel: app.domain.channel_outcomes,
nothing sent or one merchant's own key refused), ``p95_ms`` the 95th percentile (nearest rank) of the channel's answer
times (``attempts.duration_ms``).
"""
from __future__ import annotations

import logging
from datetime import timedelta

import redis
from sqlalchemy import and_, case, func, select

from app.adapters import channel_definitions
from app.adapters.db import read_only, unit_of_work
from app.adapters.models import Attempt, utcnow
from app.domain.channel_outcomes import NOT_THE_CHANNELS
from app.domain.errors import InvalidRequest
from app.services import audit, breaker, circuit_overrides, switchboard
from app.services.switchboard import required_reason, when

log = logging.getLogger("payrouter.channels")
WINDOW = timedelta(minutes=15)
_A = Attempt.__table__


def _stats_query(since, dialect: str):
    """Per channel: calls, successes, answered calls, the p95 answer time and how many were timed.
    PostgreSQL has the nearest-rank percentile built in (percentile_disc, about 3 times faster than
    ranking); elsewhere (SQLite) the rank comes from a window function."""
    # a call that says nothing of the channel (nothing sent, a merchant's key refused) is not an answer of it
    silent = and_(_A.c.status == "failed", func.coalesce(_A.c.error_code, "").in_(NOT_THE_CHANNELS))
    answered = and_(_A.c.status.in_(("succeeded", "failed", "unknown")), ~silent)
    if dialect == "postgresql":
        return select(
            _A.c.channel, func.count().label("volume"),
            func.sum(case((_A.c.status == "succeeded", 1), else_=0)).label("succeeded"),
            func.sum(case((answered, 1), else_=0)).label("answered"),
            func.percentile_disc(0.95).within_group(_A.c.duration_ms).label("p95_ms"),
            func.count(_A.c.duration_ms).label("timed"),
        ).where(_A.c.created_at >= since).group_by(_A.c.channel)
    timed = _A.c.duration_ms.is_not(None)
    ranked = select(
        _A.c.channel, _A.c.status, _A.c.duration_ms, answered.label("answered"),
        # rank among the channel's timed calls, fastest first (untimed ones ranked apart)
        func.row_number().over(partition_by=(_A.c.channel, timed), order_by=_A.c.duration_ms).label("rank"),
        func.count(_A.c.duration_ms).over(partition_by=_A.c.channel).label("timed"),
    ).where(_A.c.created_at >= since).subquery()
    nearest = (ranked.c.timed * 95 + 99) // 100  # ceil(0.95 n): the nearest-rank 95th percentile
    return select(
        ranked.c.channel,
        func.count().label("volume"),
        func.sum(case((ranked.c.status == "succeeded", 1), else_=0)).label("succeeded"),
        func.sum(case((ranked.c.answered, 1), else_=0)).label("answered"),
        func.max(case((and_(ranked.c.duration_ms.is_not(None), ranked.c.rank == nearest),
                       ranked.c.duration_ms))).label("p95_ms"),
        func.max(ranked.c.timed).label("timed"),
    ).group_by(ranked.c.channel)


def stats(window: timedelta = WINDOW, now=None) -> dict[str, dict]:
    """Each channel's calls over the last ``window``: volume, succeeded, answered, success_rate
    (None: nothing answered), p95_ms (None: no timed call)."""
    since = (now or utcnow()) - window
    with read_only() as session:
        rows = session.execute(_stats_query(since, session.get_bind().dialect.name)).all()
    found = {}
    for row in rows:
        answered, succeeded = int(row.answered or 0), int(row.succeeded or 0)
        found[row.channel] = {"volume": int(row.volume), "succeeded": succeeded, "answered": answered,
                              "success_rate": round(succeeded / answered, 4) if answered else None,
                              "p95_ms": int(row.p95_ms) if row.p95_ms is not None else None,
                              "timed": int(row.timed or 0)}
    return found


EMPTY = {"volume": 0, "succeeded": 0, "answered": 0, "success_rate": None, "p95_ms": None, "timed": 0}


def circuit_words(circuit: dict) -> str:
    """"closed", "open by hand since …, by …, because …", "open (automatic; a probe in 12 s)", "half-open"."""
    if circuit["state"] == "open" and circuit["manual"]:
        return (f"open by hand since {when(circuit['since'])}, by {circuit['opened_by']}, "
                f"because {circuit['reason']}")
    if circuit["state"] == "open":
        return f"open (automatic; a probe in {circuit['retry_in']} s)"
    return {"half_open": "half-open (a probe is under way)"}.get(circuit["state"], circuit["state"])


def board(window: timedelta = WINDOW) -> list[dict]:
    """Every stored channel, in order: id, adapter, mode, methods, currencies, its switch in words,
    whether its definition enables it and who last imported that definition and when, its circuit
    (state, manual or automatic, in words), its stats over ``window``, and whether this process runs
    it (``runs_here``) or, if it cannot build the definition, why (``build_error``). Never fails
    because this process cannot build a definition: the CLI's environment may lack what the
    servers' has."""
    from app.adapters import channels_runtime

    found = channel_definitions.current()
    running = channels_runtime.registry()  # every stored channel this process can build
    problems = channels_runtime.diagnose(found) if channels_runtime.state().stale else {}
    numbers = stats(window)
    switches = {entry["name"]: entry for entry in switchboard.board()}
    changes = channel_definitions.last_changes()
    listed = []
    for item in channel_definitions.items(found):
        cid = item["id"]
        circuit = breaker.describe(cid)
        switch = switches[f"channel:{cid}"]
        by, at = changes.get(cid, (None, None))
        listed.append({"id": cid, "adapter": item["adapter"], "mode": item.get("mode", "test"),
                       "methods": list(item["methods"]), "currencies": list(item["currencies"]),
                       "enabled": not switch["on"], "switch": switch["words"],
                       "defined_enabled": bool(item.get("enabled", True)), "defined_by": by,
                       "defined_at": when(at) if at else None,
                       "runs_here": cid in running, "build_error": problems.get(cid),
                       "circuit": {**circuit, "words": circuit_words(circuit)},
                       "window_minutes": int(window.total_seconds() // 60), **numbers.get(cid, EMPTY)})
    return listed


def processes() -> dict:
    """The stored definitions' version and each live process's build (app.adapters.channel_builds):
    the version it runs, whether that is the whole stored set, and the channels it runs without and why.
    ``unreachable`` says why the reports could not be read (Redis down)."""
    from app.adapters import channel_builds

    stored = channel_definitions.version(channel_definitions.current())
    try:
        reports = channel_builds.live()
    except redis.RedisError as exc:
        return {"stored_version": stored, "processes": [], "unreachable": f"Redis: {exc.__class__.__name__}"}
    return {"stored_version": stored, "unreachable": None,
            "processes": [{**report.to_dict(), "current": report.version == stored and not report.stale,
                           "heartbeat": when(_utc(report.heartbeat_at)), "built": when(_utc(report.built_at)),
                           "failed": when(_utc(report.failed_at))} for report in reports]}


def _utc(epoch: float | None):
    from datetime import datetime, timezone

    return None if epoch is None else datetime.fromtimestamp(epoch, timezone.utc).replace(tzinfo=None)


def _known(channel_id: str) -> None:
    from app.adapters.channels_runtime import registry

    if channel_id not in registry() and circuit_overrides.opened(channel_id) is None:
        raise InvalidRequest(f"no such channel {channel_id!r}: configured channels are "
                             + ", ".join(registry().ids()), param="channel", code="channel_unknown")


def open_circuit(channel_id: str, actor: str, reason: str) -> dict:
    """Open the channel's circuit by hand: routing drops it (``circuit_open``) in every process
    within 2 s, until an operator closes it. Audited; returns the circuit."""
    _known(channel_id)
    reason = required_reason(reason)
    before = breaker.describe(channel_id)
    with unit_of_work() as session:
        held = circuit_overrides.put(session, channel_id, actor, reason)
        after = {"state": "open", "manual": True, "opened_by": held["opened_by"], "reason": held["reason"],
                 "since": held["opened_at"], "retry_in": None}
        audit.record(session, actor=actor, action="circuit.open", target=f"channel:{channel_id}", before=before,
                     after=after, reason=reason)
    circuit_overrides.announce()
    log.warning("circuit of %s opened by hand by %s: %s", channel_id, actor, reason, extra={"channel": channel_id})
    return after


def close_circuit(channel_id: str, actor: str, reason: str) -> dict:
    """Close the channel's circuit, whether opened by hand or by the breaker (its window of faults
    is forgotten too). Audited; returns the circuit."""
    _known(channel_id)
    reason = required_reason(reason)
    before = breaker.describe(channel_id)
    after = {"state": "closed", "manual": False, "opened_by": None, "reason": None, "since": None, "retry_in": None}
    with unit_of_work() as session:
        circuit_overrides.remove(session, channel_id)
        audit.record(session, actor=actor, action="circuit.close", target=f"channel:{channel_id}", before=before,
                     after=after, reason=reason)
    circuit_overrides.announce()
    try:
        breaker.clear(channel_id)
    except redis.RedisError as exc:  # without Redis the breaker holds nothing open anyway
        log.warning("circuit of %s: the breaker's state not cleared, Redis unreachable: %s", channel_id, exc)
    log.info("circuit of %s closed by hand by %s: %s", channel_id, actor, reason)
    return after
