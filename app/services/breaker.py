"""A circuit breaker per channel, shared by every process through Redis.

Outcomes are counted in 10-second buckets over a 60-second window. When at least
MIN_CALLS calls in the window failed at a rate of FAILURE_RATE or more, the circuit
opens for COOL_DOWN seconds; then it is half-open: one probe call at a time is let
through, and a probe that succeeds closes the circuit, one that fails opens it again.
Faults are ChannelUnavailable and ChannelTimeout; a decline is a healthy answer. A call that said
nothing about the channel (refused before anything was sent: ``RequestNotSent``, a merchant's
account that could not make the request) is counted neither way (``release``).
If Redis cannot be reached the breaker stays closed (it never blocks payments by itself).

An operator may open a circuit by hand (app.services.circuit_overrides, stored in the database): it stays
open, whatever the window says, until an operator closes it; closing clears the breaker's own
state too (``clear``). ``allow`` and ``state`` ask the override first, from this process's copy
of the overrides (no round trip).

The check (``allow``) and the bookkeeping (``record``) are each one Lua script, so each is
atomic: two processes cannot both take the probe, and a probe's outcome and the window it
clears change together.

On the payment path a healthy channel costs no round trip: a process that saw a channel closed
(neither open nor failing) trusts that for ``TRUST_SECONDS`` while it listens to change notices
(app.adapters.notify: opening, closing and reopening a circuit are announced, so every process asks Redis
again at once), and it counts successes locally. It adds them to the window with its first
outcome at least ``FLUSH_SECONDS`` after the last addition, and before any fault it records. A
fault, a probe and its outcome go to Redis at once. Successes a process has not added yet (when
it dies, goes quiet, or while another process judges a fault) are missing from the window: the
rate can only look worse by them, so a circuit may open early, never late.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter

import redis

from app.adapters import notify
from app.adapters.redis_conn import get_redis
from app.services import circuit_overrides

BUCKET = 10
WINDOW_BUCKETS = 6
MIN_CALLS = 10
FAILURE_RATE = 0.5
COOL_DOWN = 30
PROBE_LEASE = 10
TRUST_SECONDS = 2.0  # how long a process trusts a closed circuit it saw (while it hears notices)
FLUSH_SECONDS = 0.25  # longest wait before counted successes reach the window

log = logging.getLogger("payrouter.breaker")

# KEYS: open, probe, then the window's buckets (newest first). ARGV: min calls, failure rate.
_WINDOW_LUA = """
local function failing()
  local ok, err = 0, 0
  for i = 3, #KEYS do
    local counts = redis.call('HMGET', KEYS[i], 'ok', 'err')
    ok = ok + (tonumber(counts[1]) or 0)
    err = err + (tonumber(counts[2]) or 0)
  end
  return ok + err >= tonumber(ARGV[1]) and err / (ok + err) >= tonumber(ARGV[2])
end
"""
# ARGV[3]: probe lease. Returns 1 if the call may go (closed), 2 if it is the probe, 0 if not.
_ALLOW_LUA = _WINDOW_LUA + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if not failing() then return 1 end
if redis.call('SET', KEYS[2], '1', 'EX', ARGV[3], 'NX') then return 2 end
return 0
"""
# ARGV[3]: 'ok' | 'err', ARGV[4]: bucket TTL, ARGV[5]: cool-down. Returns what changed.
_RECORD_LUA = _WINDOW_LUA + """
redis.call('HINCRBY', KEYS[3], ARGV[3], 1)
redis.call('EXPIRE', KEYS[3], ARGV[4])
if redis.call('GET', KEYS[2]) then
  redis.call('DEL', KEYS[2])
  if ARGV[3] == 'ok' then
    for i = 3, #KEYS do redis.call('DEL', KEYS[i]) end
    redis.call('DEL', KEYS[1])
    return 'closed'
  end
  redis.call('SET', KEYS[1], '1', 'EX', ARGV[5])
  return 'reopened'
end
if ARGV[3] == 'err' and failing() and redis.call('SET', KEYS[1], '1', 'EX', ARGV[5], 'NX') then
  return 'opened'
end
return ''
"""
_scripts: dict[str, object] = {}


def _script(name: str, r):
    """The registered script (EVALSHA, loaded again by redis-py after a server restart)."""
    if name not in _scripts:
        _scripts[name] = r.register_script(_ALLOW_LUA if name == "allow" else _RECORD_LUA)
    return _scripts[name]


BUCKET_TTL = BUCKET * (WINDOW_BUCKETS + 1)  # a bucket outlives the window it belongs to


def _bucket_key(channel_id: str, bucket: int) -> str:
    return f"payrouter:breaker:{channel_id}:b:{bucket}"


def _keys(channel_id: str, now: float) -> list[str]:
    base = f"payrouter:breaker:{channel_id}"
    current = int(now // BUCKET)
    return [f"{base}:open", f"{base}:probe", *(_bucket_key(channel_id, current - i) for i in range(WINDOW_BUCKETS))]


class _View:
    """This process's view: channels seen closed (and when), the probes its threads hold, and
    successes counted but not yet added to the window."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.watch = notify.Watch("breakers")
        self.closed: dict[str, float] = {}
        self.pending: Counter = Counter()  # (channel, bucket) → successes
        self.flushed = time.monotonic()
        self.probes = threading.local()

    def trusted(self, channel_id: str) -> bool:
        seen = self.closed.get(channel_id)
        return seen is not None and self.watch.fresh(time.monotonic(), 0.0, TRUST_SECONDS) and \
            time.monotonic() - seen < TRUST_SECONDS

    def saw_closed(self, channel_id: str, notice: int) -> None:
        with self.lock:
            if notice == self.watch.notice:  # no notice came while Redis was asked
                self.closed[channel_id] = time.monotonic()
                self.watch.caught_up(notice, time.monotonic())

    def forget(self) -> None:
        with self.lock:
            self.closed.clear()

    def holds_probe(self, channel_id: str) -> bool:
        return channel_id in getattr(self.probes, "held", ())

    def took_probe(self, channel_id: str, taken: bool) -> None:
        held = getattr(self.probes, "held", None)
        if held is None:
            held = self.probes.held = set()
        (held.add if taken else held.discard)(channel_id)


_view = _View()
notify.on_change("breakers", _view.forget)


def reset() -> None:
    """Forget this process's view (tests: between databases)."""
    with _view.lock:
        _view.closed.clear()
        _view.pending.clear()
        _view.flushed = time.monotonic()
    _view.probes = threading.local()


def _announce() -> None:
    try:
        notify.announce("breakers")
    except redis.RedisError:
        log.warning("circuit change not announced: Redis unreachable")


def flush() -> None:
    """Add the successes counted in this process to their windows (one round trip)."""
    view = _view
    with view.lock:
        pending, view.pending = view.pending, Counter()
        view.flushed = time.monotonic()
    if not pending:
        return
    try:
        pipe = get_redis().pipeline(transaction=False)
        for (channel_id, bucket), count in pending.items():
            pipe.hincrby(_bucket_key(channel_id, bucket), "ok", count)
            pipe.expire(_bucket_key(channel_id, bucket), BUCKET_TTL)
        pipe.execute()
    except redis.RedisError:
        log.warning("breaker successes not counted: Redis unreachable")


def record(channel_id: str, ok: bool, now: float | None = None) -> None:
    """Count one call's outcome; open the circuit on too many faults, or settle a probe."""
    now = time.time() if now is None else now
    view = _view
    if ok and not view.holds_probe(channel_id):
        with view.lock:
            view.pending[(channel_id, int(now // BUCKET))] += 1
            due = time.monotonic() - view.flushed >= FLUSH_SECONDS
        if due:
            flush()
        return
    view.took_probe(channel_id, False)
    flush()  # the window must hold every success before a fault is judged against it
    keys = _keys(channel_id, now)
    try:
        r = get_redis()
        changed = _script("record", r)(keys=keys, args=[MIN_CALLS, FAILURE_RATE, "ok" if ok else "err",
                                                        BUCKET_TTL, COOL_DOWN], client=r)
    except redis.RedisError:
        log.warning("breaker for %s not updated: Redis unreachable", channel_id)
        return
    changed = changed.decode() if isinstance(changed, bytes) else changed
    if changed:
        view.forget()
        _announce()
    if changed == "opened":
        log.warning("circuit of %s opened", channel_id, extra={"channel": channel_id})
    elif changed == "closed":
        log.info("circuit of %s closed after a good probe", channel_id)
    elif changed == "reopened":
        log.warning("circuit of %s opened again: the probe failed", channel_id, extra={"channel": channel_id})


def release(channel_id: str) -> None:
    """A call that said nothing about the channel (nothing was sent): counted neither way. A probe
    this thread took for it is given back at once, so the next call probes instead of every
    call waiting out the probe's lease."""
    view = _view
    if not view.holds_probe(channel_id):
        return
    view.took_probe(channel_id, False)
    try:
        get_redis().delete(_keys(channel_id, 0)[1])
    except redis.RedisError:
        log.warning("probe of %s not given back: Redis unreachable (its lease runs out)", channel_id)


def state(channel_id: str) -> str:
    """closed | open | half_open (without taking the probe); no round trip for a circuit this
    process saw closed and trusts, else one."""
    if circuit_overrides.opened(channel_id):
        return "open"
    if _view.trusted(channel_id):
        return "closed"
    open_key, probe_key = _keys(channel_id, 0)[:2]
    try:
        is_open, probing = get_redis().mget(open_key, probe_key)
    except redis.RedisError:
        return "closed"
    return "open" if is_open else ("half_open" if probing else "closed")


def allow(channel_id: str, now: float | None = None) -> bool:
    """May a call go to this channel now? After the cool-down, only one probe at a time."""
    view = _view
    if circuit_overrides.opened(channel_id):
        return False
    if now is None and view.trusted(channel_id):
        view.took_probe(channel_id, False)  # closed: no probe of this thread's is pending
        return True
    notice = view.watch.notice
    keys = _keys(channel_id, time.time() if now is None else now)
    try:
        r = get_redis()
        answer = int(_script("allow", r)(keys=keys, args=[MIN_CALLS, FAILURE_RATE, PROBE_LEASE], client=r))
    except redis.RedisError:
        return True
    if answer == 2:  # this thread's next outcome for the channel settles the probe
        view.took_probe(channel_id, True)
    elif answer == 1:  # closed: a probe this thread took and never settled is moot
        view.took_probe(channel_id, False)
        view.saw_closed(channel_id, notice)
    return answer > 0


def describe(channel_id: str) -> dict:
    """The circuit as an operator sees it (one round trip, never trusted from this process's view):
    ``state`` closed | open | half_open, ``manual`` (opened by hand: ``opened_by``, ``reason``,
    ``since``), and for an automatic open circuit ``retry_in`` (seconds until a probe may go)."""
    override = circuit_overrides.opened(channel_id)
    if override:
        return {"state": "open", "manual": True, "opened_by": override["opened_by"], "reason": override["reason"],
                "since": override["opened_at"], "retry_in": None}
    open_key, probe_key = _keys(channel_id, 0)[:2]
    try:
        pipe = get_redis().pipeline(transaction=False)
        pipe.ttl(open_key)
        pipe.exists(probe_key)
        ttl, probing = pipe.execute()
    except redis.RedisError:
        ttl, probing = -2, 0
    current = "open" if ttl != -2 else ("half_open" if probing else "closed")  # -2: no such key
    return {"state": current, "manual": False, "opened_by": None, "reason": None, "since": None,
            "retry_in": max(ttl, 0) if current == "open" else None}


def clear(channel_id: str) -> None:
    """Close the circuit the breaker opened (and forget its window and probe); announced to every
    process. Raises redis.RedisError if Redis is down (the breaker then blocks nothing anyway)."""
    now = time.time()
    keys = _keys(channel_id, now)
    get_redis().delete(*keys)
    _view.forget()
    _announce()
